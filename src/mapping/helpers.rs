//! Template helpers: `json`, `default`, `truncate` (`marker=""` for none), `first_line`, `lower`, `upper`, `join`, `split`, `url_encode`, `replace`, `concat`,
//! `contains`, `starts_with`, `ends_with`, `rfc3339`, `first_https_url`, `sha256`, `pluck` (plus handlebars' own `eq`, `ne`, `and`, `or`, `not`,
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
handlebars_helper!(rfc3339: |v: Json| to_rfc3339(v).unwrap_or_default());
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
handlebars_helper!(concat: |*args| args.iter().map(|v| text(v)).collect::<String>());

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

/// Registers every pagerhook helper.
pub fn register(hb: &mut Handlebars<'_>) {
    hb.register_helper("json", Box::new(json));
    hb.register_helper("default", Box::new(DefaultHelper));
    hb.register_helper("truncate", Box::new(truncate));
    hb.register_helper("first_line", Box::new(first_line));
    hb.register_helper("lower", Box::new(lower));
    hb.register_helper("upper", Box::new(upper));
    hb.register_helper("join", Box::new(join));
    hb.register_helper("split", Box::new(split));
    hb.register_helper("url_encode", Box::new(url_encode));
    hb.register_helper("replace", Box::new(replace));
    hb.register_helper("concat", Box::new(concat));
    hb.register_helper("rfc3339", Box::new(rfc3339));
    hb.register_helper("first_https_url", Box::new(first_https_url));
    hb.register_helper("sha256", Box::new(sha256));
    hb.register_helper("pluck", Box::new(pluck));
    hb.register_helper("contains", Box::new(contains));
    hb.register_helper("starts_with", Box::new(starts_with));
    hb.register_helper("ends_with", Box::new(ends_with));
}
