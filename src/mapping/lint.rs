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
