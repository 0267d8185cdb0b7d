//! Load-time checks of a rule beyond what compiling its templates finds.
//!
//! Handlebars compiles `{{upcase body.x}}` happily and fails only when it renders, and a
//! literal `severity = "high"` fails only when an event is built: both would turn every
//! webhook of the source into `mapping_failed` and page nobody. So every compiled template is
//! walked for helper names and argument counts, and fields written as literals are checked
//! as values, when config loads (`check`, start, reload).

use super::helpers::{self, HELPERS};
use super::raw::RawRule;
use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{TemplateError, TemplateErrorReason};

/// The helper names, for error messages.
fn helper_names() -> Vec<&'static str> {
    HELPERS.iter().map(|s| s.name).collect()
}

const SEVERITIES: &[&str] = &["critical", "error", "warning", "info"];
const ACTIONS: &[&str] = &["trigger", "acknowledge", "resolve"];

/// Literal (template-free) fields checked as the values they are.
pub fn literals(r: &RawRule, at: &str, errors: &mut Vec<String>) {
    for (field, value, allowed) in [("severity", &r.severity, SEVERITIES), ("action", &r.action, ACTIONS)] {
        let Some(v) = value.as_deref().filter(|v| !v.contains("{{")) else { continue };
        // Any case, as `event::Severity::parse` accepts a rendered value.
        if !allowed.contains(&v.trim().to_ascii_lowercase().as_str()) && !v.trim().is_empty() {
            errors.push(format!("{at}: {field} = {v:?}: expected one of {} (any case)", allowed.join(", ")));
        }
    }
}

/// Problems in one compiled template: unknown helpers, wrong argument counts, partials.
pub fn template(t: &Template) -> Vec<String> {
    let mut out = Vec::new();
    walk(t, &mut out);
    out
}

fn walk(t: &Template, out: &mut Vec<String>) {
    for (i, e) in t.elements.iter().enumerate() {
        let at = t.mapping.get(i).map(|m| (m.0, m.1));
        element(e, at, out);
    }
}

fn element(e: &TemplateElement, at: Option<(usize, usize)>, out: &mut Vec<String>) {
    match e {
        TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
        TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => helper(h, false, at, out),
        TemplateElement::HelperBlock(h) => helper(h, true, at, out),
        TemplateElement::DecoratorExpression(_)
        | TemplateElement::DecoratorBlock(_)
        | TemplateElement::PartialExpression(_)
        | TemplateElement::PartialBlock(_)
        | _ => {
            out.push(format!("{}partials and decorators ({{{{> …}}}}, {{{{* …}}}}) are not supported", position(at)))
        }
    }
}

/// `call`: the template calls `h` as a helper even without arguments (a block or a
/// sub-expression); `{{name}}` alone reads a field.
fn helper(h: &HelperTemplate, call: bool, at: Option<(usize, usize)>, out: &mut Vec<String>) {
    let called = call || h.block || !h.params.is_empty() || !h.hash.is_empty();
    if called {
        let name = match &h.name {
            Parameter::Name(n) => n.clone(),
            // `{{body.x y}}`: a field written where a helper name goes.
            _ => {
                out.push(format!("{}a field or value is followed by arguments: a helper name must come first (e.g. `{{{{lower body.x}}}}`)", position(at)));
                String::new()
            }
        };
        match helpers::find(&name) {
            None if name.is_empty() => {}
            None => {
                out.push(format!("{}unknown helper `{name}` (helpers: {})", position(at), helper_names().join(", ")))
            }
            Some(spec) => {
                let ((min, max), n) = (spec.args, h.params.len());
                if n < min || n > max {
                    out.push(format!("{}`{name}` takes {} but is given {n}", position(at), arity(min, max)));
                }
            }
        }
    }
    for p in h.params.iter().chain(h.hash.values()) {
        if let Parameter::Subexpression(s) = p {
            match s.as_element() {
                TemplateElement::Expression(inner) | TemplateElement::HtmlExpression(inner) => {
                    helper(inner, true, at, out)
                }
                other => element(other, at, out),
            }
        }
    }
    for t in [&h.template, &h.inverse].into_iter().flatten() {
        walk(t, out);
    }
}

fn arity(min: usize, max: usize) -> String {
    let n = |k: usize| if k == 1 { "1 argument".to_string() } else { format!("{k} arguments") };
    match (min, max) {
        (a, b) if a == b => n(a),
        (a, helpers::MANY) => format!("at least {}", n(a)),
        (a, b) => format!("{a} to {}", n(b)),
    }
}

fn position(at: Option<(usize, usize)>) -> String {
    match at {
        Some((line, col)) => format!("line {line}, column {col} of the template: "),
        None => String::new(),
    }
}

/// A template that does not compile, in words: where in the template, and what to look for.
pub fn syntax_error(e: &TemplateError) -> String {
    let what = match e.reason() {
        TemplateErrorReason::InvalidSyntax(_) => {
            "handlebars cannot read this: look for an unclosed `{{`, an empty `{{}}`, a block helper \
             without its name or argument (`{{#if}}`), or a stray `}}`"
                .to_string()
        }
        TemplateErrorReason::MismatchingClosedHelper(open, close) => {
            format!("`{{{{#{open}}}}}` is closed by `{{{{/{close}}}}}`; close it with `{{{{/{open}}}}}`")
        }
        TemplateErrorReason::InvalidParam(p) => format!("{p:?} is not a valid argument"),
        TemplateErrorReason::NestedSubexpression => "nested sub-expressions are not supported".to_string(),
        other => other.to_string(),
    };
    match e.pos() {
        Some((line, col)) => format!("template syntax error at line {line}, column {col}: {what}"),
        None => format!("template syntax error: {what}"),
    }
}

/// What a template can read from its context's root: [`crate::source::Verified`]'s template
/// context, and a `for_each` rule's `item`.
pub const ROOTS: &[&str] = &["body", "headers", "query", "source", "sns", "vars", "item"];

/// Paths whose first name is none of [`ROOTS`] (`{{bdy.monitor}}`): handlebars compiles them,
/// and every payload would then fail (a value) or never match (a `when`), so they are refused
/// at load. `item` counts only in a rule with `for_each`. Inside `#each`/`#with` a path is
/// relative to the block's value and is not checked; `@root`, `../` and locals are not either.
///
/// `vars.<name>` must name one of `vars`, the file's `[vars]`: a misspelt setting would
/// otherwise fail every payload, or (in a `when`) silently never match.
pub fn unknown_roots(t: &Template, for_each: bool, vars: &toml::Table) -> Vec<String> {
    let mut out = Vec::new();
    Roots { for_each, vars, out: &mut out }.template(t, 0);
    out
}

struct Roots<'a> {
    for_each: bool,
    vars: &'a toml::Table,
    out: &'a mut Vec<String>,
}

impl Roots<'_> {
    fn template(&mut self, t: &Template, depth: usize) {
        for (i, e) in t.elements.iter().enumerate() {
            let at = t.mapping.get(i).map(|m| (m.0, m.1));
            match e {
                TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => self.expression(h, depth, at),
                TemplateElement::HelperBlock(h) => self.block(h, depth, at),
                _ => {}
            }
        }
    }

    fn expression(&mut self, h: &HelperTemplate, depth: usize, at: Option<(usize, usize)>) {
        match &h.name {
            Parameter::Path(p) => self.path(p, depth, at),
            // A bare name without arguments reads a field unless a helper has that name.
            Parameter::Name(n) if h.params.is_empty() && h.hash.is_empty() && helpers::find(n).is_none() => {
                self.name(n, n, depth, at)
            }
            _ => {}
        }
        self.arguments(h, depth, at);
    }

    fn arguments(&mut self, h: &HelperTemplate, depth: usize, at: Option<(usize, usize)>) {
        for p in h.params.iter().chain(h.hash.values()) {
            match p {
                Parameter::Path(p) => self.path(p, depth, at),
                Parameter::Name(n) => self.name(n, n, depth, at),
                Parameter::Subexpression(s) => {
                    if let TemplateElement::Expression(inner) | TemplateElement::HtmlExpression(inner) = s.as_element()
                    {
                        self.expression(inner, depth, at);
                    }
                }
                _ => {}
            }
        }
    }

    /// `if`/`unless` keep their context; any other block (`each`, `with`) gives its body its
    /// parameter's, and its `else` the same one.
    fn block(&mut self, h: &HelperTemplate, depth: usize, at: Option<(usize, usize)>) {
        self.arguments(h, depth, at);
        let same = matches!(&h.name, Parameter::Name(n) if n == "if" || n == "unless");
        if let Some(t) = &h.template {
            self.template(t, if same { depth } else { depth + 1 });
        }
        if let Some(t) = &h.inverse {
            self.template(t, depth);
        }
    }

    fn path(&mut self, p: &handlebars::Path, depth: usize, at: Option<(usize, usize)>) {
        if let handlebars::Path::Relative((segs, raw)) = p {
            let names = super::native::named(segs).unwrap_or_default();
            if let Some(first) = names.first() {
                self.name(first, raw, depth, at);
            }
            if let (0, Some("vars"), Some(var)) = (depth, names.first().map(String::as_str), names.get(1)) {
                if !self.vars.contains_key(var) {
                    let known: Vec<&str> = self.vars.keys().map(String::as_str).collect();
                    self.out.push(format!(
                        "{}`{raw}`: this file's [vars] has no `{var}` (it has: {})",
                        position(at),
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ));
                }
            }
        }
    }

    fn name(&mut self, first: &str, raw: &str, depth: usize, at: Option<(usize, usize)>) {
        if depth > 0 || ROOTS.contains(&first) && (first != "item" || self.for_each) {
            return;
        }
        let why = if first == "item" {
            "`item` is set only in a rule with `for_each`".to_string()
        } else {
            format!("`{first}` is not something a template can read")
        };
        self.out.push(format!(
            "{}unknown root in `{raw}`: {why} (a path starts with one of body, headers, query, source, sns, vars, or item in a for_each rule)",
            position(at)
        ));
    }
}

/// Whether `a` is a likely typo of `b`: the same but for case, or one edit (a letter added,
/// dropped, changed or two swapped) apart.
pub fn near(a: &str, b: &str) -> bool {
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let (short, long) = if a.len() <= b.len() { (&a, &b) } else { (&b, &a) };
    if long.len() - short.len() > 1 || short.len() < 3 {
        return false;
    }
    let start = short.iter().zip(long.iter()).take_while(|(x, y)| x == y).count();
    if short.len() == long.len() {
        let (a_end, b_end) = (&short[start..], &long[start..]);
        // One letter changed, or two neighbours swapped.
        a_end.get(1..) == b_end.get(1..)
            || (a_end.len() >= 2 && a_end[0] == b_end[1] && a_end[1] == b_end[0] && a_end[2..] == b_end[2..])
    } else {
        short[start..] == long[start + 1..]
    }
}

/// The type a rule's `sequence` gives, where its text tells: a literal's own, `rfc3339` or
/// fields named like a time (`StateChangeTime`, `startsAt`, `created_at`) make a time, fields
/// named like a number (`run_number`, `id`) a number. `None`: it cannot tell, or it reads both.
pub fn sequence_kind(text: &str) -> Option<&'static str> {
    if !text.contains("{{") {
        return crate::event::Sequence::parse(text).ok().flatten().map(|s| s.stored().0);
    }
    let fields = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'));
    let mut kinds = fields.filter_map(|token| {
        let last = token.rsplit('.').next().unwrap_or(token);
        let lower = last.to_ascii_lowercase();
        match () {
            _ if token == "rfc3339" => Some("time"),
            _ if !token.contains('.') => None,
            _ if last.ends_with("At") || lower.ends_with("_at") || lower.ends_with("time") => Some("time"),
            _ if lower == "id" || lower.ends_with("_id") || last.ends_with("Id") || lower.ends_with("number") => {
                Some("number")
            }
            _ => None,
        }
    });
    let first = kinds.next()?;
    kinds.all(|k| k == first).then_some(first)
}

/// Rules that set `sequence` on the same dedup_key (the same template text) with values of
/// different types: a number and a time are never compared, so neither guards against the
/// other's old events. `rules` holds each alert rule's place, dedup_key text and sequence text.
pub fn mixed_sequences(rules: &[(String, String, String)]) -> Vec<String> {
    let mut warnings = Vec::new();
    for (i, (at, dedup_key, sequence)) in rules.iter().enumerate() {
        let Some(kind) = sequence_kind(sequence) else { continue };
        let other =
            rules[..i].iter().find(|(_, dk, seq)| dk == dedup_key && sequence_kind(seq).is_some_and(|k| k != kind));
        if let Some((first, ..)) = other {
            warnings.push(format!(
                "{at}: sequence gives a {kind}, but {first} gives another type for the same dedup_key: \
                 a number and a time are never compared, so neither rule's old events are found stale \
                 (give both the same kind of value)"
            ));
        }
    }
    warnings
}
