//! Templates rendered natively where handlebars is not needed: value templates and `when`
//! conditions alike, each compiled at load into a [`Native`] form when it has one.
//!
//! Rendering through handlebars builds a render context, resolves each path into a
//! `PathAndJson`, clones what helpers return and formats the result, for every field and every
//! condition of every event: the GitHub pull request rule renders about twenty fields per
//! webhook, and GitHub's 12 rules evaluate 12 conditions (issue 16). Most templates are literal
//! text around `{{body.x}}` and helpers that have a native form in [`helpers::HELPERS`]
//! (`default`, `json`, `eq`, `and`, ...), maybe inside `#if`/`#unless` blocks; those read the
//! context in place and write one string (or, for a condition, one truth value), and so does
//! `#each` over a root path (its body reading the item, `this` and `@first`/`@last`/`@index`/
//! `@key`). Anything else (another block, `../`, `@root`, a nested `#each`, a helper without a
//! native form, a hash argument its row does not name) keeps the handlebars template.
//!
//! The output is what handlebars renders, in the registry's mode: strict for values (a path
//! the payload lacks is an error outside `default`/`concat`/`and`/`or`), lenient for `when` (it
//! reads as null). Values go through handlebars' own `JsonRender`, each helper computes what
//! its handlebars form does, every argument is evaluated (handlebars evaluates them all before
//! calling a helper, and one can fail). Wherever handlebars fails (a missing path in strict
//! mode, a name used as an array index, an argument of the wrong type) the native form is
//! [`Undecided`] and the caller renders the template, so errors keep handlebars' words.
//!
//! **Each path once per webhook.** A mapping's templates read the same few paths over and over
//! (all 12 GitHub conditions read `headers.x-github-event`, most `body.repository.default_branch`):
//! walking them anew for each was most of the conditions' cost. The paths from the root are
//! interned at load ([`Paths`]), and one context's walks are kept in [`Lookups`], which every
//! template rendered on that context shares.

use super::helpers::{self, Arg, Args, Block, Form, Spec};
use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{JsonRender, JsonTruthy, Path, PathSeg};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

/// Handlebars would fail on this payload, or a native form cannot be sure of its output:
/// render the template instead, so errors keep handlebars' words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undecided;

/// A compiled template: literal text and expressions, in order, rendered in strict mode (a
/// value) or lenient mode (a condition).
#[derive(Debug, Clone, PartialEq)]
pub struct Native {
    parts: Vec<Part>,
    strict: bool,
}

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
    /// `{{#each body.list}}…{{else}}…{{/each}}` over a root path (its index in [`Paths`]);
    /// not nested.
    Each {
        list: usize,
        body: Vec<Part>,
        otherwise: Vec<Part>,
        has_else: bool,
    },
}

/// An expression as handlebars evaluates it.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// Named segments from the context's root (`body.action`), by their index in [`Paths`].
    Path(usize),
    /// Inside `#each`: named segments from the current item (`this.name`, `name`, `this`).
    Item(Vec<String>),
    /// Inside `#each`: `@first`, `@last`, `@index` or `@key`.
    Local(Local),
    Literal(Value),
    /// A helper with a native form, its arguments and the hash argument its row names.
    Call {
        helper: &'static Spec,
        args: Vec<Expr>,
        hash: Option<Box<Expr>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Local {
    First,
    Last,
    Index,
    Key,
}

/// The paths from the root a mapping's native templates read, each once: an expression holds
/// its path's index.
#[derive(Debug, Default)]
pub struct Paths {
    list: Vec<Vec<String>>,
    index: HashMap<Vec<String>, usize>,
}

impl Paths {
    /// Path `id` as a template writes it (`body.monitor`).
    pub fn name(&self, id: usize) -> String {
        self.list[id].join(".")
    }

    fn intern(&mut self, path: Vec<String>) -> usize {
        let next = self.list.len();
        *self.index.entry(path).or_insert_with_key(|p| {
            self.list.push(p.clone());
            next
        })
    }
}

/// One template context's walks of [`Paths`], each made when a template first needs it.
pub struct Lookups<'a> {
    paths: &'a Paths,
    data: &'a Value,
    found: Vec<Option<Result<Option<&'a Value>, Undecided>>>,
}

impl<'a> Lookups<'a> {
    /// Walks for templates rendered on `data` (the template context).
    pub fn new(paths: &'a Paths, data: &'a Value) -> Lookups<'a> {
        Lookups { paths, data, found: vec![None; paths.list.len()] }
    }

    fn get(&mut self, id: usize) -> Result<Option<&'a Value>, Undecided> {
        *self.found[id].get_or_insert_with(|| resolve(self.data, &self.paths.list[id]))
    }

    /// Path `id`'s value on this context (`None` when missing, or not a walk handlebars makes).
    pub fn value(&mut self, id: usize) -> Option<&'a Value> {
        self.get(id).ok().flatten()
    }

    /// How many paths were walked: each at most once.
    #[cfg(test)]
    fn walked(&self) -> usize {
        self.found.iter().flatten().count()
    }
}

impl Native {
    /// The native form of a compiled template, if every element has one; `strict` is the mode
    /// of the registry that compiled it. Its paths go into `paths`.
    pub fn compile(t: &Template, strict: bool, paths: &mut Paths) -> Option<Native> {
        Compiler { paths }.parts(t, false).map(|parts| Native { parts, strict })
    }

    /// What handlebars renders on the context `lookups` walks (escaping is off).
    pub fn render(&self, lookups: &mut Lookups<'_>) -> Result<String, Undecided> {
        let mut out = String::new();
        write_parts(&mut out, &self.parts, &mut Scope::new(lookups, self.strict))?;
        Ok(out)
    }

    /// Whether a condition holds: what [`super::truthy`] says of its rendered text, read
    /// from the value when the template is one expression (whitespace around it renders
    /// nothing that counts), so that `eq`, `and` and the like write no text.
    pub fn holds(&self, lookups: &mut Lookups<'_>) -> Result<bool, Undecided> {
        let mut shown = self.parts.iter().filter(|p| !matches!(p, Part::Text(t) if t.trim().is_empty()));
        let (Some(Part::Value(e)), None) = (shown.next(), shown.next()) else {
            return self.render(lookups).map(|text| super::truthy(&text));
        };
        Ok(match eval(e, &mut Scope::new(lookups, self.strict))? {
            Some(v) => match v.as_ref() {
                Value::Bool(b) => *b,
                other => super::truthy(&other.render()),
            },
            None if self.strict => return Err(Undecided),
            None => false,
        })
    }
}

/// Compiles templates, interning their paths.
struct Compiler<'p> {
    paths: &'p mut Paths,
}

impl Compiler<'_> {
    /// A template's parts; `each` when they render inside `#each` (paths are from the item).
    fn parts(&mut self, t: &Template, each: bool) -> Option<Vec<Part>> {
        let mut parts = Vec::new();
        for e in &t.elements {
            match e {
                TemplateElement::RawString(s) => parts.push(Part::Text(s.clone())),
                TemplateElement::Comment(_) => {}
                TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                    parts.push(Part::Value(self.top_level(h, each)?));
                }
                TemplateElement::HelperBlock(h) => parts.push(self.block(h, each)?),
                _ => return None,
            }
        }
        Some(parts)
    }

    /// `#if`/`#unless` with one argument and no hash (`includeZero` stays with handlebars):
    /// both branches render in the same context as the block. `#each` over a root path,
    /// without block parameters, not inside another: its body sees the item, its `else` the
    /// outer context.
    fn block(&mut self, h: &HelperTemplate, each: bool) -> Option<Part> {
        if !h.block || h.params.len() != 1 || !h.hash.is_empty() || h.block_param.is_some() {
            return None;
        }
        let Parameter::Name(name) = &h.name else { return None };
        let Form::Block(kind) = helpers::find(name)?.form else { return None };
        let positive = match kind {
            Block::If => true,
            Block::Unless => false,
            // An empty body renders nothing whatever the argument is: left to handlebars.
            Block::Each if !each && h.template.is_some() => {
                let Expr::Path(list) = self.param(&h.params[0], false)? else { return None };
                let (body, otherwise) = (self.branch(&h.template, true)?, self.branch(&h.inverse, false)?);
                return Some(Part::Each { list, body, otherwise, has_else: h.inverse.is_some() });
            }
            Block::Each | Block::With => return None,
        };
        let cond = self.param(&h.params[0], each)?;
        let (then, otherwise) = (self.branch(&h.template, each)?, self.branch(&h.inverse, each)?);
        Some(Part::If { cond, positive, then, otherwise })
    }

    fn branch(&mut self, t: &Option<Template>, each: bool) -> Option<Vec<Part>> {
        t.as_ref().map_or(Some(Vec::new()), |t| self.parts(t, each))
    }

    /// `{{body.x}}` renders the value; `{{helper ...}}` the helper's result.
    fn top_level(&mut self, h: &HelperTemplate, each: bool) -> Option<Expr> {
        if h.params.is_empty() && h.hash.is_empty() {
            return match &h.name {
                // A bare word could be a helper called without arguments: handlebars looks its
                // raw text up as a helper name first. `this`, `@index` and dotted paths are none.
                Parameter::Path(p) if !h.block && h.template.is_none() => {
                    let raw = match p {
                        Path::Relative((_, raw)) | Path::Local((_, _, raw)) => raw.as_str(),
                    };
                    (raw.contains(['.', '/', '@']) || raw == "this").then(|| self.param(&h.name, each)).flatten()
                }
                _ => None,
            };
        }
        self.helper(h, each)
    }

    /// A call of a helper that has a native form, with as many arguments as its row allows
    /// and no hash argument but the one it names.
    fn helper(&mut self, h: &HelperTemplate, each: bool) -> Option<Expr> {
        if h.block || h.template.is_some() || h.inverse.is_some() || h.block_param.is_some() {
            return None;
        }
        let Parameter::Name(name) = &h.name else { return None };
        let helper = helpers::find(name)?;
        let Form::Value { native: Some(_), hash: named } = helper.form else { return None };
        let (min, max) = helper.args;
        if h.params.len() < min || h.params.len() > max {
            return None;
        }
        let args = h.params.iter().map(|p| self.param(p, each)).collect::<Option<Vec<_>>>()?;
        let hash = match (named, h.hash.len()) {
            (_, 0) => None,
            (Some(key), 1) => Some(Box::new(self.param(h.hash.get(key)?, each)?)),
            _ => return None,
        };
        Some(Expr::Call { helper, args, hash })
    }

    fn param(&mut self, p: &Parameter, each: bool) -> Option<Expr> {
        match p {
            Parameter::Path(p) => self.path(p, each),
            Parameter::Literal(v) => Some(Expr::Literal(v.clone())),
            Parameter::Subexpression(s) => match s.element.as_ref() {
                TemplateElement::Expression(h) => self.helper(h, each),
                _ => None,
            },
            _ => None,
        }
    }

    /// Plain named segments (handlebars drops `this`): from the root, or inside `#each` from
    /// the item, where `this` alone is the item and `@first`/`@last`/`@index`/`@key` its
    /// locals. `../`, `@root` and outer locals stay with handlebars.
    fn path(&mut self, p: &Path, each: bool) -> Option<Expr> {
        match p {
            Path::Relative((segs, _)) if each || !segs.is_empty() => {
                let named = named(segs)?;
                Some(if each { Expr::Item(named) } else { Expr::Path(self.paths.intern(named)) })
            }
            Path::Local((0, name, _)) if each => Some(Expr::Local(match name.as_str() {
                "first" => Local::First,
                "last" => Local::Last,
                "index" => Local::Index,
                "key" => Local::Key,
                _ => return None,
            })),
            _ => None,
        }
    }
}

/// The root paths a value template writes as they are (`{{body.x}}`, also inside `#if` and
/// `#unless`, which keep the context), interned into `paths`: what [`super::Mapping`] checks
/// for objects before rendering, whichever renderer renders. Paths inside `#each`/`#with` and
/// helpers' results are not followed.
pub fn written_paths(t: &Template, paths: &mut Paths) -> Vec<usize> {
    let mut out = Vec::new();
    for e in &t.elements {
        match e {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h)
                if h.params.is_empty() && h.hash.is_empty() =>
            {
                if let Parameter::Path(Path::Relative((segs, _))) = &h.name {
                    out.extend(named(segs).filter(|n| !n.is_empty()).map(|n| paths.intern(n)));
                }
            }
            TemplateElement::HelperBlock(h) if matches!(&h.name, Parameter::Name(n) if n == "if" || n == "unless") => {
                for t in [&h.template, &h.inverse].into_iter().flatten() {
                    out.extend(written_paths(t, paths));
                }
            }
            _ => {}
        }
    }
    out
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

/// What a template (`'t`) renders on: the walks of the context (`'d`), inside `#each` the
/// current item, and the registry's mode.
struct Scope<'t, 'l, 'd: 't> {
    lookups: &'l mut Lookups<'d>,
    item: Option<Item<'t>>,
    strict: bool,
}

impl<'t, 'l, 'd> Scope<'t, 'l, 'd> {
    fn new(lookups: &'l mut Lookups<'d>, strict: bool) -> Self {
        Scope { lookups, item: None, strict }
    }
}

struct Item<'a> {
    value: &'a Value,
    index: usize,
    len: usize,
    /// The key, when iterating an object.
    key: Option<&'a str>,
}

fn write_parts<'t>(out: &mut String, parts: &'t [Part], s: &mut Scope<'t, '_, '_>) -> Result<(), Undecided> {
    for part in parts {
        match part {
            Part::Text(t) => out.push_str(t),
            Part::Value(e) => match eval(e, s)? {
                Some(v) => write_value(out, &v),
                // Strict mode: a top-level path the payload lacks is an error; lenient: "".
                None if s.strict => return Err(Undecided),
                None => {}
            },
            Part::If { cond, positive, then, otherwise } => {
                // `if` reads its argument without strict mode's check: missing is falsy.
                let holds = eval(cond, s)?.is_some_and(|v| v.is_truthy(false));
                write_parts(out, if holds == *positive { then } else { otherwise }, s)?;
            }
            Part::Each { list, body, otherwise, has_else } => {
                let branches = (body.as_slice(), has_else.then_some(otherwise.as_slice()));
                let list = s.lookups.get(*list)?;
                each(out, list, branches, s)?;
            }
        }
    }
    Ok(())
}

/// Handlebars' `each`: a non-empty array or object (or an empty one when there is no `else`)
/// renders the body per item; anything else the `else`, or without one nothing (a strict-mode
/// error).
fn each<'t>(
    out: &mut String,
    v: Option<&'t Value>,
    (body, otherwise): (&'t [Part], Option<&'t [Part]>),
    s: &mut Scope<'t, '_, '_>,
) -> Result<(), Undecided> {
    let items: Vec<(Option<&str>, &Value)> = match v {
        Some(Value::Array(a)) if !a.is_empty() || otherwise.is_none() => a.iter().map(|v| (None, v)).collect(),
        Some(Value::Object(m)) if !m.is_empty() || otherwise.is_none() => {
            m.iter().map(|(k, v)| (Some(k.as_str()), v)).collect()
        }
        _ => {
            return match otherwise {
                Some(o) => write_parts(out, o, s),
                None if s.strict => Err(Undecided),
                None => Ok(()),
            }
        }
    };
    let len = items.len();
    for (index, (key, value)) in items.into_iter().enumerate() {
        // Not nested: outside it there is no item.
        s.item = Some(Item { value, index, len, key });
        write_parts(out, body, s)?;
    }
    s.item = None;
    Ok(())
}

fn eval<'t>(e: &'t Expr, s: &mut Scope<'t, '_, '_>) -> Result<Arg<'t>, Undecided> {
    Ok(match e {
        Expr::Path(id) => s.lookups.get(*id)?.map(Cow::Borrowed),
        Expr::Item(p) => resolve(s.item.as_ref().ok_or(Undecided)?.value, p)?.map(Cow::Borrowed),
        Expr::Local(local) => {
            let item = s.item.as_ref().ok_or(Undecided)?;
            match local {
                Local::First => Some(Cow::Owned(Value::Bool(item.index == 0))),
                Local::Last => Some(Cow::Owned(Value::Bool(item.index + 1 == item.len))),
                Local::Index => Some(Cow::Owned(Value::from(item.index))),
                // Set only while iterating an object.
                Local::Key => item.key.map(|k| Cow::Owned(Value::String(k.to_string()))),
            }
        }
        Expr::Literal(v) => Some(Cow::Borrowed(v)),
        // A helper's result is never missing.
        Expr::Call { helper, args, hash } => Some(call(helper, args, hash.as_deref(), s)?),
    })
}

/// Arguments evaluated in place, without a `Vec`: most calls take one to three, and this runs
/// for every condition of every rule of every webhook.
const INLINE_ARGS: usize = 4;

/// A helper's result: every argument (and the hash) evaluated first, as handlebars does.
fn call<'t>(
    helper: &Spec,
    args: &'t [Expr],
    hash: Option<&'t Expr>,
    s: &mut Scope<'t, '_, '_>,
) -> Result<Cow<'t, Value>, Undecided> {
    let Form::Value { native: Some(native), .. } = helper.form else { return Err(Undecided) };
    let mut inline = [const { None }; INLINE_ARGS];
    let many;
    let values: &[Arg<'t>] = if args.len() <= INLINE_ARGS {
        for (slot, a) in inline.iter_mut().zip(args) {
            *slot = eval(a, s)?;
        }
        &inline[..args.len()]
    } else {
        many = args.iter().map(|a| eval(a, s)).collect::<Result<Vec<_>, _>>()?;
        &many
    };
    let hash = hash.map(|h| eval(h, s)).transpose()?;
    native(Args { values, hash: hash.as_ref(), strict: s.strict })
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
