//! Field templates rendered natively where handlebars is not needed.
//!
//! Rendering a field through handlebars builds a render context, resolves each path into a
//! `PathAndJson`, clones what helpers return and formats the result, for every field of every
//! event: the GitHub pull request rule renders about twenty per webhook (issue 16). Most field
//! templates are literal text around `{{body.x}}` and a few helpers (`default`, `json`,
//! `truncate`, ...), maybe inside `#if`/`#unless` blocks; those are compiled here at load into
//! [`Native`] parts that read the context in place and write one string. Anything else
//! (another block such as `#each`, `this`, `../`, `@index`, a helper not listed in [`Helper`],
//! a hash argument other than `truncate`'s `marker`) keeps the handlebars template.
//!
//! The output is what strict-mode handlebars renders: values through handlebars' own
//! `JsonRender`, each helper computing what `helpers.rs` (or handlebars' built-in) does, every
//! argument evaluated (handlebars evaluates them all before calling a helper, and one can
//! fail). Wherever handlebars fails (a missing path outside `default`/`concat`/`and`/`or`, a
//! name used as an array index, an argument of the wrong type) the native form is
//! [`Undecided`] and the caller renders the template, so errors keep handlebars' words.

use super::helpers::{percent_encode, text, to_rfc3339};
use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{JsonRender, JsonTruthy, Path, PathSeg};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt::Write as _;

/// A compiled field template: literal text and expressions, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Native(Vec<Part>);

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Value(Expr),
    /// `{{#if c}}…{{else}}…{{/if}}` (`{{else if}}` is an `if` inside the else branch);
    /// `unless` is `positive: false`.
    If {
        cond: Expr,
        positive: bool,
        then: Vec<Part>,
        otherwise: Vec<Part>,
    },
}

/// An expression as strict-mode handlebars evaluates it.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// Named segments from the context's root (`body.action`).
    Path(Vec<String>),
    Literal(Value),
    Call(Helper, Vec<Expr>),
}

/// The helpers rendered natively, with the semantics of `helpers.rs` and handlebars' own.
#[derive(Debug, Clone, PartialEq)]
enum Helper {
    Json,
    Default,
    /// `truncate`, with its `marker` hash argument when written.
    Truncate(Option<Box<Expr>>),
    FirstLine,
    Lower,
    Upper,
    Replace,
    Concat,
    UrlEncode,
    Rfc3339,
    Len,
    Eq,
    Ne,
    Not,
    And,
    Or,
}

/// Handlebars would fail on this payload, or the native form cannot be sure of its output:
/// render the template instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undecided;

/// A value an expression evaluated to; `None` is a path the payload lacks.
type Arg<'a> = Option<Cow<'a, Value>>;

impl Native {
    /// The native form of a compiled (strict) template, if every element has one.
    pub fn compile(t: &Template) -> Option<Native> {
        parts(t).map(Native)
    }

    /// What handlebars renders for the template context `data` (escaping is off).
    pub fn render(&self, data: &Value) -> Result<String, Undecided> {
        let mut out = String::new();
        write_parts(&mut out, &self.0, data)?;
        Ok(out)
    }
}

fn parts(t: &Template) -> Option<Vec<Part>> {
    let mut parts = Vec::new();
    for e in &t.elements {
        match e {
            TemplateElement::RawString(s) => parts.push(Part::Text(s.clone())),
            TemplateElement::Comment(_) => {}
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                parts.push(Part::Value(top_level(h)?));
            }
            TemplateElement::HelperBlock(h) => parts.push(if_block(h)?),
            _ => return None,
        }
    }
    Some(parts)
}

/// `#if`/`#unless` with one argument and no hash (`includeZero` stays with handlebars): both
/// branches render in the same context, so their paths are still from the root.
fn if_block(h: &HelperTemplate) -> Option<Part> {
    let positive = match &h.name {
        Parameter::Name(n) if n == "if" => true,
        Parameter::Name(n) if n == "unless" => false,
        _ => return None,
    };
    if !h.block || h.params.len() != 1 || !h.hash.is_empty() || h.block_param.is_some() {
        return None;
    }
    let branch = |t: &Option<Template>| t.as_ref().map_or(Some(Vec::new()), parts);
    Some(Part::If { cond: param(&h.params[0])?, positive, then: branch(&h.template)?, otherwise: branch(&h.inverse)? })
}

fn write_parts(out: &mut String, parts: &[Part], data: &Value) -> Result<(), Undecided> {
    for part in parts {
        match part {
            Part::Text(s) => out.push_str(s),
            // Strict mode: a top-level path the payload lacks is an error.
            Part::Value(e) => write_value(out, &*eval(e, data)?.ok_or(Undecided)?),
            Part::If { cond, positive, then, otherwise } => {
                // `if` reads its argument without strict mode's check: missing is falsy.
                let holds = eval(cond, data)?.is_some_and(|v| v.is_truthy(false));
                write_parts(out, if holds == *positive { then } else { otherwise }, data)?;
            }
        }
    }
    Ok(())
}

/// `{{body.x}}` renders the value; `{{helper ...}}` the helper's result.
fn top_level(h: &HelperTemplate) -> Option<Expr> {
    if h.params.is_empty() && h.hash.is_empty() {
        // A one-segment name could be a helper called without arguments.
        return match &h.name {
            Parameter::Path(p) if !h.block && h.template.is_none() => path(p).filter(|s| s.len() > 1).map(Expr::Path),
            _ => None,
        };
    }
    helper(h)
}

fn helper(h: &HelperTemplate) -> Option<Expr> {
    if h.block || h.template.is_some() || h.inverse.is_some() || h.block_param.is_some() {
        return None;
    }
    let Parameter::Name(name) = &h.name else { return None };
    let args = h.params.iter().map(param).collect::<Option<Vec<_>>>()?;
    let marker = match (name.as_str(), h.hash.len()) {
        (_, 0) => None,
        ("truncate", 1) => Some(Box::new(param(h.hash.get("marker")?)?)),
        _ => return None,
    };
    let helper = match (name.as_str(), args.len()) {
        ("json", 1) => Helper::Json,
        ("default", 1 | 2) => Helper::Default,
        ("truncate", 2) => Helper::Truncate(marker),
        ("first_line", 1) => Helper::FirstLine,
        ("lower", 1) => Helper::Lower,
        ("upper", 1) => Helper::Upper,
        ("replace", 3) => Helper::Replace,
        ("concat", _) => Helper::Concat,
        ("url_encode", 1) => Helper::UrlEncode,
        ("rfc3339", 1) => Helper::Rfc3339,
        ("len", 1) => Helper::Len,
        ("eq", 2) => Helper::Eq,
        ("ne", 2) => Helper::Ne,
        ("not", 1) => Helper::Not,
        ("and", _) => Helper::And,
        ("or", _) => Helper::Or,
        _ => return None,
    };
    Some(Expr::Call(helper, args))
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
        Path::Relative((segs, _)) if !segs.is_empty() => segs
            .iter()
            .map(|s| match s {
                PathSeg::Named(n) => Some(n.clone()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// What handlebars' path navigation finds: objects by key, arrays by index (a name there is
/// its `InvalidJsonIndex` error), anything else missing.
fn resolve<'a>(data: &'a Value, path: &[String]) -> Result<Option<&'a Value>, Undecided> {
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

fn eval<'a>(e: &'a Expr, data: &'a Value) -> Result<Arg<'a>, Undecided> {
    Ok(match e {
        Expr::Path(p) => resolve(data, p)?.map(Cow::Borrowed),
        Expr::Literal(v) => Some(Cow::Borrowed(v)),
        Expr::Call(h, args) => {
            // Handlebars evaluates every argument (and the hash) before calling the helper.
            let args = args.iter().map(|a| eval(a, data)).collect::<Result<Vec<_>, _>>()?;
            let marker = match h {
                Helper::Truncate(Some(m)) => Some(eval(m, data)?),
                _ => None,
            };
            // A helper's result is never missing.
            Some(call(h, args, marker)?)
        }
    })
}

/// A helper's result from its evaluated arguments.
fn call<'a>(h: &Helper, args: Vec<Arg<'a>>, marker: Option<Arg<'_>>) -> Result<Cow<'a, Value>, Undecided> {
    // Typed parameters (`handlebars_helper!`, `eq`/`ne`/`not`): missing is a strict-mode error.
    let req = |i: usize| args.get(i).and_then(Option::as_deref).ok_or(Undecided);
    // `*args` parameters (`concat`, `and`, `or`) see a missing path as null.
    let all = || args.iter().map(|a| a.as_deref().unwrap_or(&Value::Null));
    let truthy = |v: &Value| v.is_truthy(false);
    Ok(Cow::Owned(match h {
        Helper::Json => Value::String(serde_json::to_string(req(0)?).unwrap_or_default()),
        Helper::Default => return Ok(default(args)),
        Helper::Truncate(_) => {
            let n = req(1)?.as_u64().ok_or(Undecided)?;
            let marker = match &marker {
                Some(m) => m.as_deref().unwrap_or(&Value::Null).as_str().ok_or(Undecided)?,
                None => "…",
            };
            Value::String(crate::event::truncate_with(&text(req(0)?), n as usize, marker).0)
        }
        Helper::FirstLine => Value::String(text(req(0)?).lines().next().unwrap_or_default().to_string()),
        Helper::Lower => Value::String(text(req(0)?).to_lowercase()),
        Helper::Upper => Value::String(text(req(0)?).to_uppercase()),
        Helper::Replace => {
            let v = req(0)?;
            let (from, to) = (req(1)?.as_str().ok_or(Undecided)?, req(2)?.as_str().ok_or(Undecided)?);
            Value::String(text(v).replace(from, to))
        }
        Helper::Concat => Value::String(all().map(text).collect()),
        Helper::UrlEncode => Value::String(percent_encode(&text(req(0)?))),
        Helper::Rfc3339 => Value::String(to_rfc3339(req(0)?).unwrap_or_default()),
        Helper::Len => Value::from(match req(0)? {
            Value::Array(a) => a.len(),
            Value::Object(m) => m.len(),
            Value::String(s) => s.len(),
            _ => 0,
        }),
        Helper::Eq => Value::Bool(req(0)? == req(1)?),
        Helper::Ne => Value::Bool(req(0)? != req(1)?),
        Helper::Not => Value::Bool(!truthy(req(0)?)),
        Helper::And => Value::Bool(all().all(truthy)),
        Helper::Or => Value::Bool(all().any(truthy)),
    }))
}

/// `helpers.rs`' `default`: the first argument unless it is missing, null or "", else the
/// second (null when it is missing or not written).
fn default(args: Vec<Arg<'_>>) -> Cow<'_, Value> {
    let usable = |a: &Cow<'_, Value>| !a.is_null() && a.as_str() != Some("");
    let mut args = args.into_iter();
    match args.next().flatten().filter(usable) {
        Some(v) => v,
        None => args.next().flatten().unwrap_or(Cow::Owned(Value::Null)),
    }
}

/// Handlebars' `JsonRender`, without its allocation for the common scalars.
fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        other => out.push_str(&other.render()),
    }
}

#[cfg(test)]
mod tests;
