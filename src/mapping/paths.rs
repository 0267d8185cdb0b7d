//! Which parts of a payload's body a mapping can read, computed once at load (issue 16).
//!
//! The accept path parses only these ([`crate::source::Keep`]): most of a GitHub payload is
//! never read by the shipped rules, and building it as a `Value` was 9 % of the CPU.
//!
//! The result must be sound: a path left out must be one no rule can ever read. A mapping
//! reads the body in three ways, and each is covered:
//! - templates (every `when`, value and `custom_details` template of both registries): each
//!   path they name from the root is kept whole, whether it is rendered, a helper argument, a
//!   hash argument or a block's parameter (a helper may read all of it: `json`, `len`, `each`);
//! - `for_each`: the array is kept whole (its items become `item`, which templates read);
//! - a trigger's derived dedup_key hashes the whole body when the rule has no `dedup_key`, or
//!   one that may render blank: such a rule keeps everything.
//!
//! Inside an `each` or `with` block, paths are relative to the block's parameter, which is
//! kept whole, so they need nothing more. Anything this cannot follow keeps everything: `this`
//! or `@root` at the top, `../`, a block helper other than `if`, `unless`, `each` and `with`,
//! partials and decorators. It relies on handlebars' `recursive_lookup` being off (its
//! default, which `mapping` keeps): with it, a name missing inside a block would be looked up
//! in the enclosing contexts. And on helpers reading only their arguments, never the context
//! itself: true of `helpers.rs` and of handlebars' own.

use super::helpers::{self, Block, Form};
use super::{Emit, Mapping};
use crate::source::Keep;
use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::Path;

/// The body paths `m`'s rules can read.
pub(super) fn body_paths(m: &Mapping) -> Keep {
    let mut walk = Walk { keep: Keep::nothing() };
    for rule in &m.rules {
        if let Some(path) = &rule.for_each {
            walk.root_path(path);
        }
        let dedup_key = rule.fields.get("dedup_key").and_then(|id| m.strict.get_template(&id.id));
        if rule.emit == Emit::Alert && rule.for_each.is_none() && !dedup_key.is_some_and(never_blank) {
            return Keep::everything();
        }
    }
    let templates = m.strict.get_templates().values().chain(m.lenient.get_templates().values());
    for t in templates {
        if walk.template(t, 0).is_none() {
            return Keep::everything();
        }
    }
    walk.keep
}

/// Whether a template always renders something besides whitespace: text outside any block
/// (`github/{{...}}`), so a rendered dedup_key is never empty and never derived.
fn never_blank(t: &Template) -> bool {
    t.elements.iter().any(|e| matches!(e, TemplateElement::RawString(s) if !s.trim().is_empty()))
}

/// The body paths seen so far. Each step returns `None` for what it cannot follow: the
/// caller then keeps everything.
struct Walk {
    keep: Keep,
}

impl Walk {
    /// `depth` counts the `each`/`with` blocks around `t`: inside one, paths are relative to
    /// its (kept) parameter.
    fn template(&mut self, t: &Template, depth: usize) -> Option<()> {
        t.elements.iter().try_for_each(|e| self.element(e, depth))
    }

    fn element(&mut self, e: &TemplateElement, depth: usize) -> Option<()> {
        match e {
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => Some(()),
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => self.expression(h, depth),
            TemplateElement::HelperBlock(h) => self.block(h, depth),
            // Partials and decorators bring templates or data this walk does not see.
            _ => None,
        }
    }

    /// `{{path}}`, `{{helper args... key=arg}}`, or a subexpression.
    fn expression(&mut self, h: &HelperTemplate, depth: usize) -> Option<()> {
        match &h.name {
            Parameter::Path(p) => self.path(p, depth)?,
            // A bare name without arguments is a variable when no helper has that name.
            Parameter::Name(n) if h.params.is_empty() && h.hash.is_empty() => self.segments(&[n.as_str()], depth),
            _ => {}
        }
        self.arguments(h, depth)
    }

    fn arguments(&mut self, h: &HelperTemplate, depth: usize) -> Option<()> {
        h.params.iter().chain(h.hash.values()).try_for_each(|p| self.parameter(p, depth))
    }

    fn parameter(&mut self, p: &Parameter, depth: usize) -> Option<()> {
        match p {
            Parameter::Path(p) => self.path(p, depth),
            Parameter::Name(n) => {
                self.segments(&[n.as_str()], depth);
                Some(())
            }
            Parameter::Literal(_) => Some(()),
            Parameter::Subexpression(s) => match s.element.as_ref() {
                TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => self.expression(h, depth),
                other => self.element(other, depth),
            },
            // A kind of parameter this handlebars version added: not followed.
            _ => None,
        }
    }

    /// `if`/`unless` render their blocks in the same context; `each`/`with` render theirs in
    /// their parameter's, and their `else` in the same one.
    fn block(&mut self, h: &HelperTemplate, depth: usize) -> Option<()> {
        let Parameter::Name(name) = &h.name else { return None };
        let Form::Block(block) = helpers::find(name)?.form else { return None };
        let inner = match block {
            Block::If | Block::Unless => depth,
            Block::Each | Block::With => depth + 1,
        };
        self.arguments(h, depth)?;
        if let Some(t) = &h.template {
            self.template(t, inner)?;
        }
        match &h.inverse {
            Some(t) => self.template(t, depth),
            None => Some(()),
        }
    }

    fn path(&mut self, p: &Path, depth: usize) -> Option<()> {
        let Path::Relative((segs, _)) = p else {
            // `@index`, `@key`, ...: block data, not the payload.
            return Some(());
        };
        // `@root`, `../`: out of the walk's reach.
        let named = super::native::named(segs)?;
        if named.is_empty() && depth == 0 {
            // `this` at the top: the whole context.
            return None;
        }
        self.segments(&named, depth);
        Some(())
    }

    /// A path from the current context: from the root only outside every block.
    fn segments<S: AsRef<str>>(&mut self, segs: &[S], depth: usize) {
        if depth == 0 {
            self.root_path(segs);
        }
    }

    /// A path from the template context's root; only those under `body` are the payload's.
    fn root_path<S: AsRef<str>>(&mut self, segs: &[S]) {
        if let Some((first, rest)) = segs.split_first() {
            if first.as_ref() == "body" {
                self.keep.insert(rest);
            }
        }
    }
}

#[cfg(test)]
mod tests;
