//! `when` conditions compiled into native predicates at load.
//!
//! Rendering a condition through handlebars builds a render context, clones every value a
//! path reaches and formats the result as text, for each rule of each webhook: for GitHub's
//! 12 rules that was most of the mapping's cost (issue 16). Most conditions are `eq`, `ne`,
//! `and`, `or`, `not`, `starts_with` and `concat` over paths and literals; those are compiled
//! here into an [`Expr`] tree that reads the context in place. Anything else (another helper,
//! a block, text around the expression, `this`, `../`, `@index`, hash arguments) keeps the
//! handlebars template.
//!
//! The result is the same as rendering: each helper computes what handlebars' (or
//! `helpers.rs`') does, every argument is evaluated (handlebars does not short-circuit, and an
//! argument can fail), and the top-level value goes through handlebars' own `JsonRender` and
//! [`super::truthy`]. The one failure a path can meet, a non-numeric segment on an array, is
//! [`Undecided`]: the caller renders the template instead, which reports it as before.

use super::helpers::text;
use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{JsonRender, JsonTruthy, Path, PathSeg};
use serde_json::Value;
use std::borrow::Cow;

static NULL: Value = Value::Null;

/// A compiled condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate(Expr);

/// A condition's expression, as handlebars would evaluate it.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// A path from the context's root (`body.action`); missing is null.
    Path(Vec<String>),
    Literal(Value),
    Eq(Box<Expr>, Box<Expr>),
    Ne(Box<Expr>, Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    /// `helpers.rs`' `starts_with` with a literal prefix.
    StartsWith(Box<Expr>, String),
    /// `helpers.rs`' `concat`.
    Concat(Vec<Expr>),
}

/// Handlebars would fail on this payload (a path indexes an array with a name), or a native
/// form ([`super::native`] too) cannot be sure of its output: render the template instead, so
/// errors keep handlebars' words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undecided;

impl Predicate {
    /// The native form of a compiled `when` template, if it has one: a single expression
    /// (whitespace and comments around it render nothing that [`super::truthy`] keeps).
    pub fn compile(t: &Template) -> Option<Predicate> {
        let mut expr = None;
        for e in &t.elements {
            match e {
                TemplateElement::RawString(s) if s.trim().is_empty() => {}
                TemplateElement::Comment(_) => {}
                TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) if expr.is_none() => {
                    expr = Some(top_level(h)?);
                }
                _ => return None,
            }
        }
        expr.map(Predicate)
    }

    /// Whether the condition holds for the template context `data`.
    pub fn eval(&self, data: &Value) -> Result<bool, Undecided> {
        Ok(match eval(&self.0, data)?.as_ref() {
            Value::Bool(b) => *b,
            other => super::truthy(&other.render()),
        })
    }
}

/// `{{body.x}}` renders the value; `{{helper ...}}` the helper's result.
fn top_level(h: &HelperTemplate) -> Option<Expr> {
    if h.params.is_empty() && h.hash.is_empty() && h.template.is_none() && h.inverse.is_none() && !h.block {
        // A one-segment name could be a helper called without arguments.
        return match &h.name {
            Parameter::Path(p) => path(p).filter(|segs| segs.len() > 1).map(Expr::Path),
            _ => None,
        };
    }
    helper(h)
}

fn helper(h: &HelperTemplate) -> Option<Expr> {
    if !h.hash.is_empty() || h.block || h.template.is_some() || h.inverse.is_some() || h.block_param.is_some() {
        return None;
    }
    let Parameter::Name(name) = &h.name else { return None };
    let args = h.params.iter().map(param).collect::<Option<Vec<_>>>()?;
    let boxed = |i: usize| Box::new(args[i].clone());
    Some(match (name.as_str(), args.len()) {
        ("eq", 2) => Expr::Eq(boxed(0), boxed(1)),
        ("ne", 2) => Expr::Ne(boxed(0), boxed(1)),
        ("not", 1) => Expr::Not(boxed(0)),
        ("and", _) => Expr::And(args),
        ("or", _) => Expr::Or(args),
        ("concat", _) => Expr::Concat(args),
        ("starts_with", 2) => match &args[1] {
            Expr::Literal(Value::String(p)) => Expr::StartsWith(boxed(0), p.clone()),
            _ => return None,
        },
        _ => return None,
    })
}

fn param(p: &Parameter) -> Option<Expr> {
    match p {
        Parameter::Path(p) => path(p).map(Expr::Path),
        Parameter::Literal(v) => Some(Expr::Literal(v.clone())),
        Parameter::Subexpression(s) => match s.element.as_ref() {
            TemplateElement::Expression(h) => helper(h),
            _ => None,
        },
        _ => None,
    }
}

/// Plain named segments from the root; `this`, `../`, `@root` and locals stay with handlebars.
fn path(p: &Path) -> Option<Vec<String>> {
    match p {
        Path::Relative((segs, _)) if !segs.is_empty() => named(segs),
        _ => None,
    }
}

/// A relative path's segments when all are plain names (handlebars drops `this`); `None` for
/// `../` and `@root`. Shared by the native forms and the body-path analysis.
pub(super) fn named(segs: &[PathSeg]) -> Option<Vec<String>> {
    segs.iter()
        .map(|s| match s {
            PathSeg::Named(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

/// What handlebars' path navigation finds: objects by key, arrays by index (a name there is
/// its `InvalidJsonIndex` error), anything else missing (`None`).
pub(super) fn resolve<'a>(data: &'a Value, path: &[String]) -> Result<Option<&'a Value>, Undecided> {
    let mut at = Some(data);
    for seg in path {
        at = match at {
            Some(Value::Array(a)) => a.get(seg.parse::<usize>().map_err(|_| Undecided)?),
            Some(Value::Object(m)) => m.get(seg),
            _ => None,
        };
    }
    Ok(at)
}

fn eval<'a>(e: &'a Expr, data: &'a Value) -> Result<Cow<'a, Value>, Undecided> {
    let truthy = |v: &Value| v.is_truthy(false);
    // Every argument is evaluated, in order, as handlebars does; only the fold is kept (not a
    // Vec of them: this runs for every rule of every webhook).
    let fold = |args: &'a [Expr], init: bool, f: fn(bool, bool) -> bool| {
        args.iter().try_fold(init, |acc, a| Ok(f(acc, truthy(&*eval(a, data)?))))
    };
    Ok(match e {
        Expr::Path(p) => Cow::Borrowed(resolve(data, p)?.unwrap_or(&NULL)),
        Expr::Literal(v) => Cow::Borrowed(v),
        Expr::Eq(a, b) => Cow::Owned(Value::Bool(eval(a, data)? == eval(b, data)?)),
        Expr::Ne(a, b) => Cow::Owned(Value::Bool(eval(a, data)? != eval(b, data)?)),
        Expr::Not(a) => Cow::Owned(Value::Bool(!truthy(&*eval(a, data)?))),
        Expr::And(args) => Cow::Owned(Value::Bool(fold(args, true, |a, b| a && b)?)),
        Expr::Or(args) => Cow::Owned(Value::Bool(fold(args, false, |a, b| a || b)?)),
        Expr::StartsWith(a, p) => Cow::Owned(Value::Bool(text(&*eval(a, data)?).starts_with(p.as_str()))),
        Expr::Concat(args) => Cow::Owned(Value::String(
            args.iter().map(|a| eval(a, data).map(|v| text(&v))).collect::<Result<String, _>>()?,
        )),
    })
}

#[cfg(test)]
mod tests;
