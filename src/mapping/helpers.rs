//! Template helpers: `json`, `default`, `truncate` (`marker=""` for none), `first_line`, `lower`, `upper`, `join`, `split`, `url_encode`, `replace`, `concat`,
//! `contains`, `starts_with`, `ends_with` (plus handlebars' own `eq`, `ne`, `and`, `or`, `not`,
//! `gt`, `lt`, `len`, `if`, `unless`, `each`, `with`, `lookup`).

use handlebars::{handlebars_helper, Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, ScopedJson};
use serde_json::Value;

/// A JSON value as text: strings bare, everything else as compact JSON, null as "".
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

handlebars_helper!(json: |v: Json| serde_json::to_string(v).unwrap_or_default());
handlebars_helper!(lower: |v: Json| text(v).to_lowercase());
handlebars_helper!(upper: |v: Json| text(v).to_uppercase());
handlebars_helper!(replace: |v: Json, from: str, to: str| text(v).replace(from, to));
handlebars_helper!(truncate: |v: Json, n: u64, {marker: str = "…"}| crate::event::truncate_with(&text(v), n as usize, marker).0);
handlebars_helper!(first_line: |v: Json| text(v).lines().next().unwrap_or_default().to_string());
handlebars_helper!(contains: |hay: Json, needle: Json| match hay {
    Value::Array(a) => a.contains(needle),
    Value::Object(o) => o.contains_key(&text(needle)),
    other => text(other).contains(&text(needle)),
});
handlebars_helper!(starts_with: |v: Json, p: str| text(v).starts_with(p));
handlebars_helper!(ends_with: |v: Json, p: str| text(v).ends_with(p));
handlebars_helper!(join: |v: Json, sep: str| match v {
    Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(sep),
    other => text(other),
});
// `(lookup (split body.AlarmArn ":") 3)` is how a mapping reads the region out of an ARN.
handlebars_helper!(split: |v: Json, sep: str| text(v).split(sep).map(|p| Value::String(p.to_string())).collect::<Vec<_>>());
handlebars_helper!(url_encode: |v: Json| percent_encode(&text(v)));
handlebars_helper!(concat: |*args| args.iter().map(|v| text(v)).collect::<String>());

/// `{{default value fallback}}`: `value` unless it is missing, null or an empty string.
///
/// The one helper that accepts a missing field in strict mode: it is how a mapping says
/// "this field is optional".
struct Default;

impl HelperDef for Default {
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

/// Percent-encodes all but RFC 3986's unreserved characters, so a name is safe in any URL part.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Registers every pagerhook helper.
pub fn register(hb: &mut Handlebars<'_>) {
    hb.register_helper("json", Box::new(json));
    hb.register_helper("default", Box::new(Default));
    hb.register_helper("truncate", Box::new(truncate));
    hb.register_helper("first_line", Box::new(first_line));
    hb.register_helper("lower", Box::new(lower));
    hb.register_helper("upper", Box::new(upper));
    hb.register_helper("join", Box::new(join));
    hb.register_helper("split", Box::new(split));
    hb.register_helper("url_encode", Box::new(url_encode));
    hb.register_helper("replace", Box::new(replace));
    hb.register_helper("concat", Box::new(concat));
    hb.register_helper("contains", Box::new(contains));
    hb.register_helper("starts_with", Box::new(starts_with));
    hb.register_helper("ends_with", Box::new(ends_with));
}
