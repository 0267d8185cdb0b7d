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
//!
//! **Each path once per webhook.** A mapping's conditions read the same few paths over and
//! over (all 12 GitHub rules read `headers.x-github-event`, most `body.repository.default_branch`):
//! walking them anew for each rule was most of the conditions' cost. The paths are interned at
//! load ([`Paths`]), and one webhook's walks are kept in [`Lookups`], which every condition of
//! that webhook shares.

use super::helpers::text;
use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{JsonRender, JsonTruthy, Path, PathSeg};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;

static NULL: Value = Value::Null;

/// A compiled condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate(Expr);

/// A condition's expression, as handlebars would evaluate it.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// A path from the context's root (`body.action`), by its index in [`Paths`]; missing is
    /// null.
    Path(usize),
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

/// The paths a mapping's conditions read, each once: an expression holds its path's index.
#[derive(Debug, Default)]
pub struct Paths {
    list: Vec<Vec<String>>,
    index: HashMap<Vec<String>, usize>,
}

impl Paths {
    fn intern(&mut self, path: Vec<String>) -> usize {
        let next = self.list.len();
        *self.index.entry(path).or_insert_with_key(|p| {
            self.list.push(p.clone());
            next
        })
    }
}

/// One template context's walks of [`Paths`], each made when a condition first needs it.
pub struct Lookups<'a> {
    paths: &'a Paths,
    data: &'a Value,
    found: Vec<Option<Result<Option<&'a Value>, Undecided>>>,
}

impl<'a> Lookups<'a> {
    /// Walks for conditions evaluated against `data` (the template context).
    pub fn new(paths: &'a Paths, data: &'a Value) -> Lookups<'a> {
        Lookups { paths, data, found: vec![None; paths.list.len()] }
    }

    fn get(&mut self, id: usize) -> Result<Option<&'a Value>, Undecided> {
        *self.found[id].get_or_insert_with(|| resolve(self.data, &self.paths.list[id]))
    }

    /// How many paths were walked: each at most once.
    #[cfg(test)]
    fn walked(&self) -> usize {
        self.found.iter().flatten().count()
    }
}

impl Predicate {
    /// The native form of a compiled `when` template, if it has one: a single expression
    /// (whitespace and comments around it render nothing that [`super::truthy`] keeps). Its
    /// paths go into `paths`.
    pub fn compile(t: &Template, paths: &mut Paths) -> Option<Predicate> {
        let mut expr = None;
        for e in &t.elements {
            match e {
                TemplateElement::RawString(s) if s.trim().is_empty() => {}
                TemplateElement::Comment(_) => {}
                TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) if expr.is_none() => {
                    expr = Some(top_level(h, paths)?);
                }
                _ => return None,
            }
        }
        expr.map(Predicate)
    }

    /// Whether the condition holds for the template context that `lookups` walks.
    pub fn eval(&self, lookups: &mut Lookups<'_>) -> Result<bool, Undecided> {
        Ok(match eval(&self.0, lookups)?.as_ref() {
            Value::Bool(b) => *b,
            other => super::truthy(&other.render()),
        })
    }
}

/// `{{body.x}}` renders the value; `{{helper ...}}` the helper's result.
fn top_level(h: &HelperTemplate, paths: &mut Paths) -> Option<Expr> {
    if h.params.is_empty() && h.hash.is_empty() && h.template.is_none() && h.inverse.is_none() && !h.block {
        // A one-segment name could be a helper called without arguments.
        return match &h.name {
            Parameter::Path(p) => path(p).filter(|segs| segs.len() > 1).map(|p| Expr::Path(paths.intern(p))),
            _ => None,
        };
    }
    helper(h, paths)
}

fn helper(h: &HelperTemplate, paths: &mut Paths) -> Option<Expr> {
    if !h.hash.is_empty() || h.block || h.template.is_some() || h.inverse.is_some() || h.block_param.is_some() {
        return None;
    }
    let Parameter::Name(name) = &h.name else { return None };
    let args = h.params.iter().map(|p| param(p, paths)).collect::<Option<Vec<_>>>()?;
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

fn param(p: &Parameter, paths: &mut Paths) -> Option<Expr> {
    match p {
        Parameter::Path(p) => path(p).map(|p| Expr::Path(paths.intern(p))),
        Parameter::Literal(v) => Some(Expr::Literal(v.clone())),
        Parameter::Subexpression(s) => match s.element.as_ref() {
            TemplateElement::Expression(h) => helper(h, paths),
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

fn eval<'a, 'd: 'a>(e: &'a Expr, lookups: &mut Lookups<'d>) -> Result<Cow<'a, Value>, Undecided> {
    Ok(match e {
        Expr::Path(id) => Cow::Borrowed(lookups.get(*id)?.unwrap_or(&NULL)),
        Expr::Literal(v) => Cow::Borrowed(v),
        Expr::Eq(a, b) => Cow::Owned(Value::Bool(eval(a, lookups)? == eval(b, lookups)?)),
        Expr::Ne(a, b) => Cow::Owned(Value::Bool(eval(a, lookups)? != eval(b, lookups)?)),
        Expr::Not(a) => Cow::Owned(Value::Bool(!arg_truthy(&*eval(a, lookups)?))),
        Expr::And(args) => Cow::Owned(Value::Bool(fold(args, lookups, true, |a, b| a && b)?)),
        Expr::Or(args) => Cow::Owned(Value::Bool(fold(args, lookups, false, |a, b| a || b)?)),
        Expr::StartsWith(a, p) => Cow::Owned(Value::Bool(text(&*eval(a, lookups)?).starts_with(p.as_str()))),
        Expr::Concat(args) => Cow::Owned(Value::String(
            args.iter().map(|a| eval(a, lookups).map(|v| text(&v))).collect::<Result<String, _>>()?,
        )),
    })
}

/// `and`/`or`: every argument is evaluated, in order, as handlebars does; only the fold is
/// kept (not a Vec of them: this runs for every rule of every webhook).
fn fold(args: &[Expr], lookups: &mut Lookups<'_>, init: bool, f: fn(bool, bool) -> bool) -> Result<bool, Undecided> {
    args.iter().try_fold(init, |acc, a| Ok(f(acc, arg_truthy(&*eval(a, lookups)?))))
}

/// Handlebars' truthiness of a helper argument (a value; [`super::truthy`] is that of a
/// rendered condition's text).
fn arg_truthy(v: &Value) -> bool {
    v.is_truthy(false)
}

#[cfg(test)]
mod tests;
