//! Template helpers: [`HELPERS`] is the one list of every helper a template may call.
//!
//! A row holds all that is known of a helper: its name and how many arguments it takes (the
//! load-time lint, `lint.rs`), what it gives (the README's helper table, which a test compares
//! with this one), where handlebars gets it ([`register`]), and how the native renderer
//! (`native.rs`) computes it, or that only handlebars does. Adding a helper is adding its row;
//! nothing else lists helpers. `native/tests.rs` draws its generated calls from this table and
//! checks each native form against handlebars on any payload.

use super::native::Undecided;
use handlebars::{
    handlebars_helper, Context, Handlebars, Helper, HelperDef, JsonTruthy, RenderContext, RenderError, ScopedJson,
};
use serde_json::Value;
use std::borrow::Cow;

/// No upper limit on a helper's arguments.
pub const MANY: usize = usize::MAX;

/// Every helper a template may call: pagerhook's, then handlebars' own that mappings may use.
/// The README's helper table is this one, in this order (`helpers/tests.rs` compares them).
pub const HELPERS: &[Spec] = &[
    Spec {
        name: "json",
        args: (1, 1),
        usage: "json v",
        meaning: "`v` as JSON text; a `custom_details` value that is exactly `{{json X}}` stays structured",
        handlebars: Def::Own(|| Box::new(json)),
        form: Form::Value { native: Some(json_native), hash: None },
    },
    Spec {
        name: "default",
        args: (1, 2),
        usage: "default v fallback",
        meaning: "`v`, unless it is missing, null or empty: then `fallback` (or nothing); how a value \
                  template reads a field that may be missing",
        handlebars: Def::Own(|| Box::new(DefaultHelper)),
        form: Form::Value { native: Some(default_native), hash: None },
    },
    Spec {
        name: "truncate",
        args: (2, 2),
        usage: "truncate s N marker=\"…\"",
        meaning: "`s` cut to at most N characters, `marker` included (`marker=\"\"` for none)",
        handlebars: Def::Own(|| Box::new(truncate)),
        form: Form::Value { native: Some(truncate_native), hash: Some("marker") },
    },
    Spec {
        name: "first_line",
        args: (1, 1),
        usage: "first_line s",
        meaning: "`s` up to its first line break",
        handlebars: Def::Own(|| Box::new(first_line)),
        form: Form::Value { native: Some(first_line_native), hash: None },
    },
    Spec {
        name: "lower",
        args: (1, 1),
        usage: "lower s",
        meaning: "`s` in lower case",
        handlebars: Def::Own(|| Box::new(lower)),
        form: Form::Value { native: Some(lower_native), hash: None },
    },
    Spec {
        name: "upper",
        args: (1, 1),
        usage: "upper s",
        meaning: "`s` in upper case",
        handlebars: Def::Own(|| Box::new(upper)),
        form: Form::Value { native: Some(upper_native), hash: None },
    },
    Spec {
        name: "join",
        args: (2, 2),
        usage: "join list \", \"",
        meaning: "the elements of `list` as text, with the separator between them",
        handlebars: Def::Own(|| Box::new(join)),
        form: Form::Value { native: None, hash: None },
    },
    Spec {
        name: "split",
        args: (2, 2),
        usage: "split s \":\"",
        meaning: "the parts of `s` between separators, a list: `(lookup (split body.AlarmArn \":\") 3)` is an \
                  ARN's region",
        handlebars: Def::Own(|| Box::new(split)),
        form: Form::Value { native: None, hash: None },
    },
    Spec {
        name: "url_encode",
        args: (1, 1),
        usage: "url_encode s",
        meaning: "`s` percent-encoded but for RFC 3986's unreserved characters, safe in any part of a URL",
        handlebars: Def::Own(|| Box::new(url_encode)),
        form: Form::Value { native: Some(url_encode_native), hash: None },
    },
    Spec {
        name: "replace",
        args: (3, 3),
        usage: "replace s \"a\" \"b\"",
        meaning: "`s` with every `a` replaced by `b`",
        handlebars: Def::Own(|| Box::new(replace)),
        form: Form::Value { native: Some(replace_native), hash: None },
    },
    Spec {
        name: "concat",
        args: (1, MANY),
        usage: "concat a b …",
        meaning: "the arguments as text, one after the other; a missing one is empty",
        handlebars: Def::Own(|| Box::new(concat)),
        form: Form::Value { native: Some(concat_native), hash: None },
    },
    Spec {
        name: "contains",
        args: (2, 2),
        usage: "contains x v",
        meaning: "whether list `x` holds `v`, object `x` has the key `v`, or text `x` contains `v`",
        handlebars: Def::Own(|| Box::new(contains)),
        form: Form::Value { native: Some(contains_native), hash: None },
    },
    Spec {
        name: "starts_with",
        args: (2, 2),
        usage: "starts_with s \"p\"",
        meaning: "whether `s` begins with `p`",
        handlebars: Def::Own(|| Box::new(starts_with)),
        form: Form::Value { native: Some(starts_with_native), hash: None },
    },
    Spec {
        name: "ends_with",
        args: (2, 2),
        usage: "ends_with s \"p\"",
        meaning: "whether `s` ends with `p`",
        handlebars: Def::Own(|| Box::new(ends_with)),
        form: Form::Value { native: None, hash: None },
    },
    Spec {
        name: "rfc3339",
        args: (1, 1),
        usage: "rfc3339 t",
        meaning: "epoch seconds or milliseconds, or a time string with any offset, as RFC 3339 in UTC; empty \
                  when unreadable",
        handlebars: Def::Own(|| Box::new(rfc3339)),
        form: Form::Value { native: Some(rfc3339_native), hash: None },
    },
    Spec {
        name: "first_https_url",
        args: (1, 1),
        usage: "first_https_url text",
        meaning: "the first `https://` URL in free text (a runbook link in a description); empty when none",
        handlebars: Def::Own(|| Box::new(first_https_url)),
        form: Form::Value { native: None, hash: None },
    },
    Spec {
        name: "sha256",
        args: (1, 1),
        usage: "sha256 s",
        meaning: "the SHA-256 of `s`, in hex",
        handlebars: Def::Own(|| Box::new(sha256)),
        form: Form::Value { native: None, hash: None },
    },
    Spec {
        name: "pluck",
        args: (2, 2),
        usage: "pluck list \"a.b\"",
        meaning: "that field of every element that has it, a list: `(lookup (pluck …) 0)` is the first one present",
        handlebars: Def::Own(|| Box::new(pluck)),
        form: Form::Value { native: None, hash: None },
    },
    Spec {
        name: "count",
        args: (3, 3),
        usage: "count list \"a.b\" v",
        meaning:
            "how many elements of the list have that field equal to `v`: `(count body.alerts \"status\" \"firing\")`",
        handlebars: Def::Own(|| Box::new(count)),
        form: Form::Value { native: None, hash: None },
    },
    Spec {
        name: "where",
        args: (3, 3),
        usage: "where list \"a.b\" v",
        meaning: "the elements of the list whose field equals `v`, a list: \
                  `(pluck (where body.alerts \"status\" \"firing\") \"labels.severity\")`",
        handlebars: Def::Own(|| Box::new(where_)),
        form: Form::Value { native: None, hash: None },
    },
    Spec {
        name: "if",
        args: (1, 1),
        usage: "#if c",
        meaning: "its block when `c` is truthy (not missing, false, 0, null, or an empty text, list or object), \
                  else its `{{else}}`",
        handlebars: Def::Builtin,
        form: Form::Block(Block::If),
    },
    Spec {
        name: "unless",
        args: (1, 1),
        usage: "#unless c",
        meaning: "its block when `c` is not truthy, else its `{{else}}`",
        handlebars: Def::Builtin,
        form: Form::Block(Block::Unless),
    },
    Spec {
        name: "each",
        args: (1, 1),
        usage: "#each list",
        meaning: "its block for each element of a list (or field of an object) as `this`, with `@index`, `@key`, \
                  `@first`, `@last`; its `{{else}}` when there is none",
        handlebars: Def::Builtin,
        form: Form::Block(Block::Each),
    },
    Spec {
        name: "with",
        args: (1, 1),
        usage: "#with v",
        meaning: "its block with `v` as `this`",
        handlebars: Def::Builtin,
        form: Form::Block(Block::With),
    },
    Spec {
        name: "lookup",
        args: (2, 2),
        usage: "lookup x k",
        meaning: "element `k` of list `x`, or field `k` of object `x`",
        handlebars: Def::Builtin,
        form: Form::Value { native: None, hash: None },
    },
    Spec {
        name: "eq",
        args: (2, 2),
        usage: "eq a b",
        meaning: "whether `a` and `b` are the same JSON value (`1` is not `\"1\"`)",
        handlebars: Def::Builtin,
        form: Form::Value { native: Some(eq_native), hash: None },
    },
    Spec {
        name: "ne",
        args: (2, 2),
        usage: "ne a b",
        meaning: "whether `a` and `b` differ",
        handlebars: Def::Builtin,
        form: Form::Value { native: Some(ne_native), hash: None },
    },
    Spec {
        name: "gt",
        args: (2, 2),
        usage: "gt a b",
        meaning: "whether `a` > `b`: numbers, texts, or a number and a text that reads as one",
        handlebars: Def::Builtin,
        form: Form::Value { native: None, hash: None },
    },
    Spec {
        name: "gte",
        args: (2, 2),
        usage: "gte a b",
        meaning: "whether `a` ≥ `b`",
        handlebars: Def::Builtin,
        form: Form::Value { native: None, hash: None },
    },
    Spec {
        name: "lt",
        args: (2, 2),
        usage: "lt a b",
        meaning: "whether `a` < `b`",
        handlebars: Def::Builtin,
        form: Form::Value { native: None, hash: None },
    },
    Spec {
        name: "lte",
        args: (2, 2),
        usage: "lte a b",
        meaning: "whether `a` ≤ `b`",
        handlebars: Def::Builtin,
        form: Form::Value { native: None, hash: None },
    },
    Spec {
        name: "and",
        args: (1, MANY),
        usage: "and a b …",
        meaning: "whether every argument is truthy",
        handlebars: Def::Builtin,
        form: Form::Value { native: Some(and_native), hash: None },
    },
    Spec {
        name: "or",
        args: (1, MANY),
        usage: "or a b …",
        meaning: "whether any argument is truthy",
        handlebars: Def::Builtin,
        form: Form::Value { native: Some(or_native), hash: None },
    },
    Spec {
        name: "not",
        args: (1, 1),
        usage: "not v",
        meaning: "whether `v` is not truthy",
        handlebars: Def::Builtin,
        form: Form::Value { native: Some(not_native), hash: None },
    },
    Spec {
        name: "len",
        args: (1, 1),
        usage: "len v",
        meaning: "how many elements a list (or fields an object, or bytes a text) has; 0 for anything else",
        handlebars: Def::Builtin,
        form: Form::Value { native: Some(len_native), hash: None },
    },
];

/// One helper: all that the lint, the registries, the native renderer, the body-path analysis
/// and the README need to know of it.
pub struct Spec {
    /// As a template writes it.
    pub name: &'static str,
    /// The fewest and most positional arguments ([`MANY`]: no limit).
    pub args: (usize, usize),
    /// A call as a template writes it, for the README.
    #[cfg_attr(not(test), allow(dead_code, reason = "the README's table, which a test compares"))]
    pub usage: &'static str,
    /// What it gives, in a line, for the README.
    #[cfg_attr(not(test), allow(dead_code, reason = "the README's table, which a test compares"))]
    pub meaning: &'static str,
    pub handlebars: Def,
    pub form: Form,
}

/// Where handlebars gets a helper.
pub enum Def {
    /// pagerhook's own: [`register`] adds it to both registries.
    Own(fn() -> Box<dyn HelperDef + Send + Sync>),
    /// Built into handlebars (`helpers/tests.rs` checks that it is).
    Builtin,
}

/// How a template calls a helper, and what the native renderer does with it.
pub enum Form {
    /// `{{name args}}` or `(name args)`: a value. `native` computes it as handlebars does, from
    /// the evaluated arguments and the hash argument `hash` when it is written; a call of a
    /// helper without one (or with another hash argument) stays a handlebars template.
    Value { native: Option<NativeFn>, hash: Option<&'static str> },
    /// `{{#name arg}}…{{else}}…{{/name}}`.
    Block(Block),
}

/// The block helpers; `native.rs` renders `if`, `unless` and `each` itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// The block in the same context when the argument is truthy, else the `else`.
    If,
    /// The reverse of `If`.
    Unless,
    /// The block once per item, each time in that item's context.
    Each,
    /// The block in the argument's context.
    With,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Helpers are the same when their names are: the table holds each name once (a test checks).
impl PartialEq for Spec {
    fn eq(&self, other: &Spec) -> bool {
        self.name == other.name
    }
}

/// The helper a template calls `name`, if mappings may use it.
pub fn find(name: &str) -> Option<&'static Spec> {
    HELPERS.iter().find(|s| s.name == name)
}

/// Registers pagerhook's own helpers (handlebars has the others).
pub fn register(hb: &mut Handlebars<'_>) {
    for spec in HELPERS {
        if let Def::Own(make) = spec.handlebars {
            hb.register_helper(spec.name, make());
        }
    }
}

/// A value an argument evaluated to; `None` is a path the payload lacks.
pub type Arg<'a> = Option<Cow<'a, Value>>;

/// A native form: the helper's value from its evaluated arguments, or [`Undecided`] where
/// handlebars would fail (its words for the error are the ones to report).
pub type NativeFn = for<'a, 's> fn(Args<'a, 's>) -> Result<Cow<'a, Value>, Undecided>;

static NULL: Value = Value::Null;

/// A helper's evaluated arguments, as the native renderer hands them to a [`NativeFn`].
pub struct Args<'a, 's> {
    /// In order.
    pub values: &'s [Arg<'a>],
    /// The hash argument, when the template writes it (`truncate`'s `marker`).
    pub hash: Option<&'s Arg<'a>>,
    /// Strict mode (value templates) rather than lenient (`when`).
    pub strict: bool,
}

impl<'a, 's> Args<'a, 's> {
    /// Argument `i` as a typed parameter sees it (`handlebars_helper!`'s, `eq`'s): one the
    /// payload lacks is an error in strict mode and null in lenient mode.
    fn get(&self, i: usize) -> Result<&'s Value, Undecided> {
        match self.values.get(i) {
            Some(Some(v)) => Ok(v),
            Some(None) if !self.strict => Ok(&NULL),
            _ => Err(Undecided),
        }
    }

    /// Argument `i` as a `str` parameter: anything but a string is a type error.
    fn str(&self, i: usize) -> Result<&'s str, Undecided> {
        self.get(i)?.as_str().ok_or(Undecided)
    }

    /// Every argument as a `*args` parameter sees them (`concat`, `and`, `or`): missing is null.
    fn all(&self) -> impl Iterator<Item = &'s Value> {
        self.values.iter().map(|a| a.as_deref().unwrap_or(&NULL))
    }
}

fn owned<'a>(v: impl Into<Value>) -> Result<Cow<'a, Value>, Undecided> {
    Ok(Cow::Owned(v.into()))
}

/// Handlebars' truthiness of a helper argument (`if`, `not`, `and`, `or`).
fn truthy(v: &Value) -> bool {
    v.is_truthy(false)
}

/// A JSON value as text: strings bare, everything else as compact JSON, null as "".
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

// Each helper's handlebars form, then its native form when it has one.

handlebars_helper!(json: |v: Json| serde_json::to_string(v).unwrap_or_default());
fn json_native<'a>(a: Args<'a, '_>) -> Result<Cow<'a, Value>, Undecided> {
    owned(serde_json::to_string(a.get(0)?).unwrap_or_default())
}

/// `{{default value fallback}}`: `value` unless it is missing, null or an empty string.
///
/// The one helper that accepts a missing field in strict mode: it is how a mapping says
/// "this field is optional".
struct DefaultHelper;

impl HelperDef for DefaultHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let usable = |i: usize| {
            h.param(i).filter(|p| !p.is_value_missing() && !p.value().is_null() && p.value().as_str() != Some(""))
        };
        let chosen = usable(0).or_else(|| h.param(1)).map(|p| p.value().clone()).unwrap_or(Value::Null);
        Ok(ScopedJson::Derived(chosen))
    }
}

/// The first argument unless it is missing, null or "", else the second (null when it is
/// missing or not written); a path's value is not copied.
fn default_native<'a>(a: Args<'a, '_>) -> Result<Cow<'a, Value>, Undecided> {
    let usable = |v: &&Cow<'a, Value>| !v.is_null() && v.as_str() != Some("");
    let first = a.values.first().and_then(Option::as_ref).filter(usable);
    let chosen = first.or_else(|| a.values.get(1).and_then(Option::as_ref));
    Ok(chosen.cloned().unwrap_or(Cow::Owned(Value::Null)))
}

handlebars_helper!(truncate: |v: Json, n: u64, {marker: str = "…"}| crate::event::truncate_with(&text(v), n as usize, marker).0);
fn truncate_native<'a>(a: Args<'a, '_>) -> Result<Cow<'a, Value>, Undecided> {
    let n = a.get(1)?.as_u64().ok_or(Undecided)?;
    // A hash argument is read without strict mode's check: a missing path is null.
    let marker = match a.hash {
        Some(m) => m.as_deref().unwrap_or(&NULL).as_str().ok_or(Undecided)?,
        None => "…",
    };
    owned(crate::event::truncate_with(&text(a.get(0)?), n as usize, marker).0)
}

handlebars_helper!(first_line: |v: Json| first_line_of(v));
fn first_line_native<'a>(a: Args<'a, '_>) -> Result<Cow<'a, Value>, Undecided> {
    owned(first_line_of(a.get(0)?))
}

fn first_line_of(v: &Value) -> String {
    text(v).lines().next().unwrap_or_default().to_string()
}

handlebars_helper!(lower: |v: Json| text(v).to_lowercase());
fn lower_native<'a>(a: Args<'a, '_>) -> Result<Cow<'a, Value>, Undecided> {
    owned(text(a.get(0)?).to_lowercase())
}

handlebars_helper!(upper: |v: Json| text(v).to_uppercase());
fn upper_native<'a>(a: Args<'a, '_>) -> Result<Cow<'a, Value>, Undecided> {
    owned(text(a.get(0)?).to_uppercase())
}

handlebars_helper!(join: |v: Json, sep: str| match v {
    Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(sep),
    other => text(other),
});

// `(lookup (split body.AlarmArn ":") 3)` is how a mapping reads the region out of an ARN.
handlebars_helper!(split: |v: Json, sep: str| text(v).split(sep).map(|p| Value::String(p.to_string())).collect::<Vec<_>>());

handlebars_helper!(url_encode: |v: Json| percent_encode(&text(v)));
fn url_encode_native<'a>(a: Args<'a, '_>) -> Result<Cow<'a, Value>, Undecided> {
    owned(percent_encode(&text(a.get(0)?)))
}

handlebars_helper!(replace: |v: Json, from: str, to: str| text(v).replace(from, to));
fn replace_native<'a>(a: Args<'a, '_>) -> Result<Cow<'a, Value>, Undecided> {
    let v = a.get(0)?;
    owned(text(v).replace(a.str(1)?, a.str(2)?))
}

handlebars_helper!(concat: |*args| args.iter().map(|v| text(v)).collect::<String>());
fn concat_native<'a>(a: Args<'a, '_>) -> Result<Cow<'a, Value>, Undecided> {
    owned(a.all().map(text).collect::<String>())
}

handlebars_helper!(contains: |hay: Json, needle: Json| contains_in(hay, needle));
// Native: shipped `when`s test a list of `[vars]` with it (a workflow name, a level), and
// every shipped condition must render without handlebars.
fn contains_native<'a>(a: Args<'a, '_>) -> Result<Cow<'a, Value>, Undecided> {
    owned(contains_in(a.get(0)?, a.get(1)?))
}
fn contains_in(hay: &Value, needle: &Value) -> bool {
    match hay {
        Value::Array(a) => a.contains(needle),
        Value::Object(o) => o.contains_key(&text(needle)),
        other => text(other).contains(&text(needle)),
    }
}

handlebars_helper!(starts_with: |v: Json, p: str| text(v).starts_with(p));
fn starts_with_native<'a>(a: Args<'a, '_>) -> Result<Cow<'a, Value>, Undecided> {
    let v = a.get(0)?;
    owned(text(v).starts_with(a.str(1)?))
}

handlebars_helper!(ends_with: |v: Json, p: str| text(v).ends_with(p));

handlebars_helper!(rfc3339: |v: Json| to_rfc3339(v).unwrap_or_default());
fn rfc3339_native<'a>(a: Args<'a, '_>) -> Result<Cow<'a, Value>, Undecided> {
    owned(to_rfc3339(a.get(0)?).unwrap_or_default())
}

handlebars_helper!(first_https_url: |v: Json| first_https_url_in(&text(v)).unwrap_or_default().to_string());

handlebars_helper!(sha256: |v: Json| { use sha2::Digest as _; hex::encode(sha2::Sha256::digest(text(v).as_bytes())) });

// `(pluck body.Trigger.Metrics "MetricStat.Metric.Namespace")`: that field of every element
// that has it, so `(lookup (pluck ...) 0)` is the first one present.
handlebars_helper!(pluck: |v: Json, path: str| match v {
    Value::Array(a) => a
        .iter()
        .filter_map(|e| path.split('.').try_fold(e, |e, seg| e.get(seg)))
        .filter(|e| !e.is_null())
        .cloned()
        .collect::<Vec<_>>(),
    _ => Vec::new(),
});

// `(count body.alerts "status" "firing")`: Alertmanager's `.Alerts.Firing | len`, which a
// grouped summary needs (`len body.alerts` counts the resolved alerts too).
handlebars_helper!(count: |v: Json, path: str, want: Json| match v {
    Value::Array(a) => a.iter().filter(|e| path.split('.').try_fold(*e, |e, seg| e.get(seg)) == Some(want)).count(),
    _ => 0,
});

// `(where body.alerts "status" "firing")`: Alertmanager's `.Alerts.Firing`, so that a grouped
// mapping can read the firing alerts' labels (the group's worst severity) and not the resolved.
handlebars_helper!(where_: |v: Json, path: str, want: Json| match v {
    Value::Array(a) => a
        .iter()
        .filter(|e| path.split('.').try_fold(*e, |e, seg| e.get(seg)) == Some(want))
        .cloned()
        .collect::<Vec<_>>(),
    _ => Vec::new(),
});

// Handlebars' own (`eq`, `ne`, `not`: typed parameters; `and`, `or`: `*args`; `len`), natively.

fn eq_native<'a>(a: Args<'a, '_>) -> Result<Cow<'a, Value>, Undecided> {
    owned(a.get(0)? == a.get(1)?)
}

fn ne_native<'a>(a: Args<'a, '_>) -> Result<Cow<'a, Value>, Undecided> {
    owned(a.get(0)? != a.get(1)?)
}

fn not_native<'a>(a: Args<'a, '_>) -> Result<Cow<'a, Value>, Undecided> {
    owned(!truthy(a.get(0)?))
}

fn and_native<'a>(a: Args<'a, '_>) -> Result<Cow<'a, Value>, Undecided> {
    owned(a.all().all(truthy))
}

fn or_native<'a>(a: Args<'a, '_>) -> Result<Cow<'a, Value>, Undecided> {
    owned(a.all().any(truthy))
}

fn len_native<'a>(a: Args<'a, '_>) -> Result<Cow<'a, Value>, Undecided> {
    owned(match a.get(0)? {
        Value::Array(a) => a.len(),
        Value::Object(m) => m.len(),
        Value::String(s) => s.len(),
        _ => 0,
    })
}

/// A time as RFC 3339 in UTC, from epoch seconds or milliseconds (a number or digits: values
/// past 10^11 are milliseconds, since seconds get there only in the year 5138) or a time string
/// with any offset: RFC 3339, `+0000` offsets (CloudWatch) and `2024-05-14 09:31:07 UTC` or
/// `... +0200` (GitLab). `None` for anything else, so the field is left out rather than wrong.
pub fn to_rfc3339(v: &Value) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    let t = match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => epoch(i)?,
            None => epoch(n.as_f64()? as i64)?,
        },
        Value::String(s) if !s.trim().is_empty() && s.trim().bytes().all(|b| b.is_ascii_digit()) => {
            epoch(s.trim().parse().ok()?)?
        }
        Value::String(s) => parse_time(s.trim())?,
        _ => return None,
    };
    t.to_offset(time::UtcOffset::UTC).format(&Rfc3339).ok()
}

fn epoch(n: i64) -> Option<time::OffsetDateTime> {
    let nanos =
        if n.unsigned_abs() >= 100_000_000_000 { i128::from(n) * 1_000_000 } else { i128::from(n) * 1_000_000_000 };
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    use time::{OffsetDateTime, PrimitiveDateTime};
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    // `+0000` / `+0200` offsets, with `T` or a space, with or without fractions.
    let normalized = s.replacen(' ', "T", 1);
    let (head, utc) = match normalized.strip_suffix(" UTC").or_else(|| normalized.strip_suffix("Z")) {
        Some(h) => (h.to_string(), true),
        None => (normalized.clone(), false),
    };
    if utc {
        let f = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]");
        return PrimitiveDateTime::parse(&head, &f).ok().map(PrimitiveDateTime::assume_utc);
    }
    let f = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]][optional [ ]][offset_hour sign:mandatory][optional [:]][offset_minute]"
    );
    OffsetDateTime::parse(&head, &f).ok()
}

/// The first `https://` URL in free text (an alarm description that links its runbook), up to
/// the first whitespace or closing quote or bracket.
pub fn first_https_url_in(s: &str) -> Option<&str> {
    let start = s.find("https://")?;
    let rest = &s[start..];
    let end =
        rest.find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | ']')).unwrap_or(rest.len());
    let url = rest[..end].trim_end_matches(['.', ',', ';']);
    (url.len() > "https://".len()).then_some(url)
}

/// Percent-encodes all but RFC 3986's unreserved characters, so a name is safe in any URL part.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests;
