//! Field templates rendered natively where handlebars is not needed.
//!
//! Rendering a field through handlebars builds a render context, resolves each path into a
//! `PathAndJson`, clones what helpers return and formats the result, for every field of every
//! event: the GitHub pull request rule renders about twenty per webhook (issue 16). Most field
//! templates are literal text around `{{body.x}}` and a few helpers (`default`, `json`,
//! `truncate`, ...), maybe inside `#if`/`#unless` blocks; those are compiled here at load into
//! [`Native`] parts that read the context in place and write one string, and so is `#each`
//! over a root path (its body reading the item, `this` and `@first`/`@last`/`@index`/`@key`).
//! Anything else (another block, `../`, `@root`, a nested `#each`, a helper not listed in
//! [`Helper`], a hash argument other than `truncate`'s `marker`) keeps the handlebars template.
//!
//! The output is what strict-mode handlebars renders: values through handlebars' own
//! `JsonRender`, each helper computing what `helpers.rs` (or handlebars' built-in) does, every
//! argument evaluated (handlebars evaluates them all before calling a helper, and one can
//! fail). Wherever handlebars fails (a missing path outside `default`/`concat`/`and`/`or`, a
//! name used as an array index, an argument of the wrong type) the native form is
//! [`Undecided`] and the caller renders the template, so errors keep handlebars' words.

use super::helpers::{percent_encode, text, to_rfc3339};
use super::predicate::Undecided;
use super::predicate::{named, resolve};
use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{JsonRender, JsonTruthy, Path};
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
    /// `{{#each body.list}}…{{else}}…{{/each}}` over a root path; not nested.
    Each {
        list: Vec<String>,
        body: Vec<Part>,
        otherwise: Vec<Part>,
        has_else: bool,
    },
}

/// An expression as strict-mode handlebars evaluates it.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// Named segments from the context's root (`body.action`).
    Path(Vec<String>),
    /// Inside `#each`: named segments from the current item (`this.name`, `name`, `this`).
    Item(Vec<String>),
    /// Inside `#each`: `@first`, `@last`, `@index` or `@key`.
    Local(String),
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

/// A value an expression evaluated to; `None` is a path the payload lacks.
type Arg<'a> = Option<Cow<'a, Value>>;

impl Native {
    /// The native form of a compiled (strict) template, if every element has one.
    pub fn compile(t: &Template) -> Option<Native> {
        parts(t, false).map(Native)
    }

    /// What handlebars renders for the template context `data` (escaping is off).
    pub fn render(&self, data: &Value) -> Result<String, Undecided> {
        let mut out = String::new();
        write_parts(&mut out, &self.0, &Scope { root: data, item: None })?;
        Ok(out)
    }
}

/// A template's parts; `each` when they render inside `#each` (paths are from the item).
fn parts(t: &Template, each: bool) -> Option<Vec<Part>> {
    let mut parts = Vec::new();
    for e in &t.elements {
        match e {
            TemplateElement::RawString(s) => parts.push(Part::Text(s.clone())),
            TemplateElement::Comment(_) => {}
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                parts.push(Part::Value(top_level(h, each)?));
            }
            TemplateElement::HelperBlock(h) => parts.push(block(h, each)?),
            _ => return None,
        }
    }
    Some(parts)
}

/// `#if`/`#unless` with one argument and no hash (`includeZero` stays with handlebars): both
/// branches render in the same context as the block. `#each` over a root path, without block
/// parameters, not inside another: its body sees the item, its `else` the outer context.
fn block(h: &HelperTemplate, each: bool) -> Option<Part> {
    if !h.block || h.params.len() != 1 || !h.hash.is_empty() || h.block_param.is_some() {
        return None;
    }
    let Parameter::Name(name) = &h.name else { return None };
    let branch = |t: &Option<Template>, each| t.as_ref().map_or(Some(Vec::new()), |t| parts(t, each));
    let positive = match name.as_str() {
        "if" => true,
        "unless" => false,
        // An empty body renders nothing whatever the argument is: left to handlebars.
        "each" if !each && h.template.is_some() => {
            let Expr::Path(list) = param(&h.params[0], false)? else { return None };
            let (body, otherwise) = (branch(&h.template, true)?, branch(&h.inverse, false)?);
            return Some(Part::Each { list, body, otherwise, has_else: h.inverse.is_some() });
        }
        _ => return None,
    };
    let cond = param(&h.params[0], each)?;
    Some(Part::If { cond, positive, then: branch(&h.template, each)?, otherwise: branch(&h.inverse, each)? })
}

/// Where paths are read from: the root, and inside `#each` the current item.
struct Scope<'a> {
    root: &'a Value,
    item: Option<Item<'a>>,
}

struct Item<'a> {
    value: &'a Value,
    index: usize,
    len: usize,
    /// The key, when iterating an object.
    key: Option<&'a str>,
}

fn write_parts(out: &mut String, parts: &[Part], scope: &Scope<'_>) -> Result<(), Undecided> {
    for part in parts {
        match part {
            Part::Text(s) => out.push_str(s),
            // Strict mode: a top-level path the payload lacks is an error.
            Part::Value(e) => write_value(out, &*eval(e, scope)?.ok_or(Undecided)?),
            Part::If { cond, positive, then, otherwise } => {
                // `if` reads its argument without strict mode's check: missing is falsy.
                let holds = eval(cond, scope)?.is_some_and(|v| v.is_truthy(false));
                write_parts(out, if holds == *positive { then } else { otherwise }, scope)?;
            }
            Part::Each { list, body, otherwise, has_else } => {
                let branches = (body.as_slice(), has_else.then_some(otherwise.as_slice()));
                each(out, resolve(scope.root, list)?, branches, scope)?;
            }
        }
    }
    Ok(())
}

/// Handlebars' `each`: a non-empty array or object (or an empty one when there is no `else`)
/// renders the body per item; anything else the `else`, or without one a strict-mode error.
fn each(
    out: &mut String,
    v: Option<&Value>,
    (body, otherwise): (&[Part], Option<&[Part]>),
    s: &Scope<'_>,
) -> Result<(), Undecided> {
    let items: Vec<(Option<&str>, &Value)> = match v {
        Some(Value::Array(a)) if !a.is_empty() || otherwise.is_none() => a.iter().map(|v| (None, v)).collect(),
        Some(Value::Object(m)) if !m.is_empty() || otherwise.is_none() => {
            m.iter().map(|(k, v)| (Some(k.as_str()), v)).collect()
        }
        _ => return otherwise.map_or(Err(Undecided), |o| write_parts(out, o, s)),
    };
    let len = items.len();
    for (index, (key, value)) in items.into_iter().enumerate() {
        write_parts(out, body, &Scope { root: s.root, item: Some(Item { value, index, len, key }) })?;
    }
    Ok(())
}

/// `{{body.x}}` renders the value; `{{helper ...}}` the helper's result.
fn top_level(h: &HelperTemplate, each: bool) -> Option<Expr> {
    if h.params.is_empty() && h.hash.is_empty() {
        return match &h.name {
            // A bare word could be a helper called without arguments: handlebars looks its
            // raw text up as a helper name first. `this`, `@index` and dotted paths are none.
            Parameter::Path(p) if !h.block && h.template.is_none() => {
                let raw = match p {
                    Path::Relative((_, raw)) | Path::Local((_, _, raw)) => raw.as_str(),
                };
                (raw.contains(['.', '/', '@']) || raw == "this").then(|| param(&h.name, each)).flatten()
            }
            _ => None,
        };
    }
    helper(h, each)
}

fn helper(h: &HelperTemplate, each: bool) -> Option<Expr> {
    if h.block || h.template.is_some() || h.inverse.is_some() || h.block_param.is_some() {
        return None;
    }
    let Parameter::Name(name) = &h.name else { return None };
    let args = h.params.iter().map(|p| param(p, each)).collect::<Option<Vec<_>>>()?;
    let marker = match (name.as_str(), h.hash.len()) {
        (_, 0) => None,
        ("truncate", 1) => Some(Box::new(param(h.hash.get("marker")?, each)?)),
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

fn param(p: &Parameter, each: bool) -> Option<Expr> {
    match p {
        Parameter::Path(p) => path(p, each),
        Parameter::Literal(v) => Some(Expr::Literal(v.clone())),
        Parameter::Subexpression(s) => match s.element.as_ref() {
            TemplateElement::Expression(h) => helper(h, each),
            _ => None,
        },
        _ => None,
    }
}

/// Plain named segments (handlebars drops `this`): from the root, or inside `#each` from the
/// item, where `this` alone is the item and `@first`/`@last`/`@index`/`@key` its locals.
/// `../`, `@root` and outer locals stay with handlebars.
fn path(p: &Path, each: bool) -> Option<Expr> {
    match p {
        Path::Relative((segs, _)) if each || !segs.is_empty() => {
            let named = named(segs)?;
            Some(if each { Expr::Item(named) } else { Expr::Path(named) })
        }
        Path::Local((0, name, _)) if each && matches!(name.as_str(), "first" | "last" | "index" | "key") => {
            Some(Expr::Local(name.clone()))
        }
        _ => None,
    }
}

fn eval<'a>(e: &'a Expr, s: &Scope<'a>) -> Result<Arg<'a>, Undecided> {
    Ok(match e {
        Expr::Path(p) => resolve(s.root, p)?.map(Cow::Borrowed),
        Expr::Item(p) => resolve(s.item.as_ref().ok_or(Undecided)?.value, p)?.map(Cow::Borrowed),
        Expr::Local(name) => {
            let item = s.item.as_ref().ok_or(Undecided)?;
            match name.as_str() {
                "first" => Some(Cow::Owned(Value::Bool(item.index == 0))),
                "last" => Some(Cow::Owned(Value::Bool(item.index + 1 == item.len))),
                "index" => Some(Cow::Owned(Value::from(item.index))),
                // Set only while iterating an object.
                _ => item.key.map(|k| Cow::Owned(Value::String(k.to_string()))),
            }
        }
        Expr::Literal(v) => Some(Cow::Borrowed(v)),
        Expr::Call(h, args) => {
            // Handlebars evaluates every argument (and the hash) before calling the helper.
            let args = args.iter().map(|a| eval(a, s)).collect::<Result<Vec<_>, _>>()?;
            let marker = match h {
                Helper::Truncate(Some(m)) => Some(eval(m, s)?),
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
