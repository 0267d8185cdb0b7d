//! Mapping files: rules that turn a verified webhook into PagerDuty events.
//!
//! Every template is compiled when config loads (`serve`, `check` and `render` share
//! [`Mapping::load`]), so a broken mapping is found before a webhook arrives. Rendering is
//! pure: no I/O, no clock; a failure is a [`MappingError`] value that names rule and field.

mod helpers;
mod lint;
mod native;
mod paths;
mod raw;

use crate::event::{own, Action, AlertDraft, ChangeDraft, Event, Image, Link, RoutingKey, Severity};
use crate::source::Verified;
use handlebars::{Context, Handlebars};
use raw::{RawMappingFile, RawRule};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A rule could not turn a payload into events.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("rule '{rule}' ({file}): {field}: {message}")]
pub struct MappingError {
    pub file: String,
    pub rule: String,
    pub field: String,
    pub message: String,
}

/// Why mapping files could not be loaded; [`Mapping::load`] reports every one.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LoadError {
    #[error("cannot read mapping file {path}: {message}")]
    Read { path: String, message: String },
    /// Not TOML, or not a mapping file's shape; toml's message quotes the line.
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    /// A rule that does not compile; the message names file, line, rule and field.
    #[error("{0}")]
    Rule(String),
}

/// Why a payload produced no events to queue.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// A rule failed on this payload.
    #[error(transparent)]
    Rule(#[from] MappingError),
    /// The rules would make more than `max` events; counted before the surplus is rendered.
    #[error("{at_least} or more events, more than max_events_per_request = {max}")]
    TooManyEvents { at_least: usize, max: usize },
}

/// The routing keys a source's rules may use: its own or the default, and the named ones.
#[derive(Debug, Clone, Default)]
pub struct RoutingKeys {
    /// The source's `routing_key`, else `[pagerduty] routing_key`.
    pub default: Option<RoutingKey>,
    /// `[pagerduty.routing_keys]`.
    pub named: BTreeMap<String, RoutingKey>,
}

/// What a webhook over its caps would have sent ([`Mapping::overview`]).
#[derive(Debug, Clone, Default)]
pub struct Overview {
    /// How many events.
    pub events: usize,
    /// The summaries of its first triggers, at most [`Overview::SUMMARIES`].
    pub summaries: Vec<String>,
    /// The worst severity among its triggers, if it has any.
    pub worst: Option<Severity>,
    /// Its acknowledges and resolves, kept whole: the cap is on triggers, so that incidents
    /// opened before the overflow still close (`ingest` sends them if they fit its byte cap).
    pub closing: Vec<Rendered>,
}

impl Overview {
    /// How many summaries a page shows: enough to recognise the outage, few enough to read.
    pub const SUMMARIES: usize = 5;

    /// Counts `e` in.
    pub fn add(&mut self, e: &Event) {
        self.events += 1;
        if let Some(severity) = own::severity_of(e) {
            self.worst = Some(self.worst.map_or(severity, |w| own::worse(w, severity)));
            if let Some(summary) = e.body().pointer("/payload/summary").and_then(Value::as_str) {
                if self.summaries.len() < Overview::SUMMARIES {
                    self.summaries.push(summary.to_string());
                }
            }
        }
    }
}

impl Overview {
    /// Counts `r` in, and keeps it if it acknowledges or resolves.
    pub fn add_closing(&mut self, r: Rendered) {
        self.add(&r.event);
        if matches!(r.event.action(), Some(Action::Acknowledge | Action::Resolve)) {
            self.closing.push(r);
        }
    }
}

/// A `for_each` item (`item`: its index), or a whole rule (`item: None`), by the rule's name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ItemRef {
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
}

/// An item or rule that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemFailure {
    pub at: ItemRef,
    pub error: MappingError,
}

/// What [`Mapping::apply_isolated`] made: the events of every item and rule that mapped, and
/// those that failed.
#[derive(Debug, Clone)]
pub struct Applied {
    pub events: Vec<Rendered>,
    pub failed: Vec<ItemFailure>,
}

/// Which items of a rule a run renders.
enum Wanted {
    All,
    Items(Vec<usize>),
}

impl Wanted {
    /// What of `rule` to render when only `only` is wanted (all of it without `only`); `None`:
    /// nothing.
    fn of(rule: &Rule, only: Option<&[ItemRef]>) -> Option<Wanted> {
        let Some(only) = only else { return Some(Wanted::All) };
        let mine: Vec<&ItemRef> = only.iter().filter(|r| r.rule == rule.name).collect();
        if mine.is_empty() {
            return None;
        }
        if mine.iter().any(|r| r.item.is_none()) {
            return Some(Wanted::All);
        }
        Some(Wanted::Items(mine.iter().filter_map(|r| r.item).collect()))
    }
}

/// Where rendered events go: kept, or, for an [`Overview`], only counted; and, when each item
/// stands on its own (`isolate`), the failures.
struct Out {
    events: Vec<Rendered>,
    overview: Option<Overview>,
    isolate: bool,
    failed: Vec<ItemFailure>,
}

impl Out {
    fn new(isolate: bool, overview: Option<Overview>) -> Out {
        Out { events: Vec::new(), overview, isolate, failed: Vec::new() }
    }

    /// Item `item` of `rule` (or the whole rule) failed: noted when items stand on their own,
    /// else the request's error.
    fn fail(&mut self, rule: &Rule, item: Option<usize>, error: MappingError) -> Result<(), ApplyError> {
        if !self.isolate {
            return Err(ApplyError::Rule(error));
        }
        self.failed.push(ItemFailure { at: ItemRef { rule: rule.name.clone(), item }, error });
        Ok(())
    }

    fn push(&mut self, r: Rendered) {
        match &mut self.overview {
            Some(o) => o.add_closing(r),
            None => self.events.push(r),
        }
    }

    fn len(&self) -> usize {
        self.overview.as_ref().map_or(self.events.len(), |o| o.events)
    }
}

/// One event a rule produced, with the rule's name (for logs and `render`).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub rule: String,
    pub event: Event,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emit {
    Alert,
    Change,
}

/// How templates are rendered: `[mapping] native` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Renderer {
    /// Natively where a template has a native form and the payload lets it decide (the same
    /// output, faster: [`native`]), else through handlebars.
    #[default]
    Native,
    /// Every template through handlebars: the fallback for an operator who suspects the
    /// native renderer (`pagerhook test` renders every case both ways).
    Handlebars,
}

/// A template: its id in its registry (strict for values, lenient for `when`), and its
/// native form when it has one ([`native`]), which renders it without handlebars.
#[derive(Debug)]
struct Tpl {
    id: String,
    native: Option<native::Native>,
    /// The paths it writes as they are ([`native::written_paths`]): an object there is an
    /// error, in either renderer, rather than `[object]`. Empty for a `when`.
    written: Vec<usize>,
}

/// Where a rule's events go.
#[derive(Debug)]
enum Routing {
    Default,
    /// A fixed name from `[pagerduty.routing_keys]`, checked at load.
    Named(RoutingKey),
    /// A template that renders a name from `[pagerduty.routing_keys]`.
    Template(Tpl),
}

/// A `custom_details` value: templates inside any JSON shape.
#[derive(Debug)]
enum Details {
    /// A template; `json` when it is exactly `{{json X}}`, so its output is kept structured.
    Template {
        tpl: Tpl,
        json: bool,
    },
    Literal(Value),
    Map(Vec<(String, Details)>),
    List(Vec<Details>),
}

#[derive(Debug)]
struct LinkTpl {
    href: Tpl,
    text: Option<Tpl>,
}

#[derive(Debug)]
struct ImageTpl {
    src: Tpl,
    href: Option<Tpl>,
    alt: Option<Tpl>,
}

/// One template context as both renderers see it: handlebars' `Context`, and the native
/// renderer's walks of it, shared by every template rendered on it.
struct Frame<'c> {
    ctx: &'c Context,
    lookups: native::Lookups<'c>,
    renderer: Renderer,
}

impl<'c> Frame<'c> {
    fn new(ctx: &'c Context, paths: &'c native::Paths, renderer: Renderer) -> Frame<'c> {
        Frame { ctx, lookups: native::Lookups::new(paths, ctx.data()), renderer }
    }

    /// The native form to try for `t`: none when the renderer is handlebars.
    fn native<'t>(&self, t: &'t Tpl) -> Option<&'t native::Native> {
        match self.renderer {
            Renderer::Native => t.native.as_ref(),
            Renderer::Handlebars => None,
        }
    }
}

/// `rule` failed in `field` on this payload.
fn rule_error(rule: &Rule, field: &str, message: String) -> MappingError {
    MappingError { file: rule.file.clone(), rule: rule.name.clone(), field: field.to_string(), message }
}

#[derive(Debug)]
struct Rule {
    name: String,
    file: String,
    /// The condition, in the lenient registry.
    when: Option<Tpl>,
    for_each: Option<Vec<String>>,
    emit: Emit,
    action: Option<Tpl>,
    /// The `action` template as written, to tell which actions the rule can send.
    action_text: Option<String>,
    /// The scalar fields' templates, by field name.
    fields: BTreeMap<&'static str, Tpl>,
    links: Vec<LinkTpl>,
    images: Vec<ImageTpl>,
    custom_details: Option<Details>,
    routing: Routing,
    /// `sequence`: alert rules only (a change event has no lane to order).
    sequence: Option<Tpl>,
    /// `escalate = true`: alert rules only (`queue::lanes::escalate`).
    escalate: bool,
    is_final: bool,
}

/// The compiled rules of one source.
pub struct Mapping {
    rules: Vec<Rule>,
    /// The paths the rules' native templates read.
    paths: native::Paths,
    /// Values: a missing field is an error unless `default` is used.
    strict: Handlebars<'static>,
    /// Conditions (`when`): a missing field is falsy, since one rule sees many payload shapes.
    lenient: Handlebars<'static>,
    keys: RoutingKeys,
    renderer: Renderer,
    /// Every file's `[vars]`, the context's `vars` (a name two files set differently is
    /// refused at load: one context serves all of a source's rules).
    vars: Value,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping").field("rules", &self.rules.len()).finish()
    }
}

const SCALARS: &[&str] =
    &["dedup_key", "severity", "summary", "source", "component", "group", "class", "timestamp", "client", "client_url"];

fn registry(strict: bool) -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(strict);
    // Events are JSON, not HTML: `<`, `&` and `"` must arrive as typed.
    hb.register_escape_fn(handlebars::no_escape);
    helpers::register(&mut hb);
    hb
}

fn is_json_template(t: &str) -> bool {
    let t = t.trim();
    t.starts_with("{{") && t.ends_with("}}") && t[2..].trim_start().starts_with("json ") && t.matches("{{").count() == 1
}

/// Collects compile errors for one file.
struct Compiler<'a> {
    strict: &'a mut Handlebars<'static>,
    lenient: &'a mut Handlebars<'static>,
    paths: &'a mut native::Paths,
    errors: Vec<String>,
    at: String,
    prefix: String,
    /// The rule has `for_each`: its templates may read `item`.
    for_each: bool,
    /// The file's `[vars]`, which its templates may read as `vars.<name>`.
    vars: &'a toml::Table,
}

impl Compiler<'_> {
    /// Registers a template (lint problems and syntax errors go to `errors`); its id.
    fn register(&mut self, field: &str, tpl: &str, lenient: bool) -> String {
        let id = format!("{}.{field}", self.prefix);
        let hb = if lenient { &mut *self.lenient } else { &mut *self.strict };
        match hb.register_template_string(&id, tpl) {
            Err(e) => self.errors.push(format!("{}: {field}: {}", self.at, lint::syntax_error(&e))),
            Ok(()) => {
                let problems = hb
                    .get_template(&id)
                    .map(|t| [lint::template(t), lint::unknown_roots(t, self.for_each, self.vars)].concat())
                    .unwrap_or_default();
                self.errors.extend(problems.into_iter().map(|p| format!("{}: {field}: {p}", self.at)));
            }
        }
        id
    }

    /// A value template (strict), with its native form when it has one.
    fn add(&mut self, field: &str, tpl: &str) -> Tpl {
        let id = self.register(field, tpl, false);
        let t = self.strict.get_template(&id);
        let native = t.and_then(|t| native::Native::compile(t, true, self.paths));
        let written = t.map(|t| native::written_paths(t, self.paths)).unwrap_or_default();
        Tpl { id, native, written }
    }

    /// A `when` condition (lenient: a missing field is falsy), with its native form.
    fn condition(&mut self, tpl: &str) -> Tpl {
        let id = self.register("when", tpl, true);
        let native = self.lenient.get_template(&id).and_then(|t| native::Native::compile(t, false, self.paths));
        Tpl { id, native, written: Vec::new() }
    }

    fn add_opt(&mut self, field: &str, tpl: &Option<String>) -> Option<Tpl> {
        tpl.as_ref().map(|t| self.add(field, t))
    }

    fn details(&mut self, path: &str, v: &toml::Value) -> Details {
        match v {
            toml::Value::String(s) => Details::Template { tpl: self.add(path, s), json: is_json_template(s) },
            toml::Value::Table(t) => {
                Details::Map(t.iter().map(|(k, v)| (k.clone(), self.details(&format!("{path}.{k}"), v))).collect())
            }
            toml::Value::Array(a) => {
                Details::List(a.iter().enumerate().map(|(i, v)| self.details(&format!("{path}[{i}]"), v)).collect())
            }
            other => Details::Literal(serde_json::to_value(other).unwrap_or(Value::Null)),
        }
    }
}

impl Mapping {
    /// Reads and compiles mapping files. Errors name file, line and rule; all are reported.
    pub fn load(files: &[PathBuf], keys: RoutingKeys) -> Result<(Mapping, Vec<String>), Vec<LoadError>> {
        let mut texts = Vec::new();
        let mut errors = Vec::new();
        for path in files {
            match std::fs::read_to_string(path) {
                Ok(t) => texts.push((path.clone(), t)),
                Err(e) => errors.push(LoadError::Read { path: path.display().to_string(), message: e.to_string() }),
            }
        }
        match Mapping::compile(&texts, keys) {
            Ok(done) if errors.is_empty() => Ok(done),
            Ok(_) => Err(errors),
            Err(more) => Err(errors.into_iter().chain(more).collect()),
        }
    }

    /// This mapping's source with `text` (a mapping file pasted into the console's
    /// playground) in place of its files: the same routing keys and renderer.
    pub fn pasted(&self, text: &str) -> Result<Mapping, Vec<LoadError>> {
        let texts = [(PathBuf::from("pasted mapping"), text.to_string())];
        Mapping::compile(&texts, self.keys.clone()).map(|(m, _)| m.rendered_by(self.renderer))
    }

    /// Compiles mapping files' texts, each named by its path.
    fn compile(texts: &[(PathBuf, String)], keys: RoutingKeys) -> Result<(Mapping, Vec<String>), Vec<LoadError>> {
        let mut strict = registry(true);
        let mut lenient = registry(false);
        let mut paths = native::Paths::default();
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut sequences = Vec::new();
        let mut vars = Map::new();
        for (path, text) in texts {
            let file: RawMappingFile = match toml::from_str(text) {
                Ok(f) => f,
                Err(e) => {
                    let message = e.to_string().trim_end().to_string();
                    errors.push(LoadError::Syntax { path: path.display().to_string(), message });
                    continue;
                }
            };
            if file.rules.is_empty() {
                warnings.push(format!("{}: no [[rule]] in this file", path.display()));
            }
            errors.extend(merge_vars(&mut vars, &file.vars, path));
            for spanned in file.rules {
                let line = text[..spanned.span().start].matches('\n').count() + 1;
                let r = spanned.into_inner();
                let mut c = Compiler {
                    strict: &mut strict,
                    lenient: &mut lenient,
                    paths: &mut paths,
                    errors: Vec::new(),
                    at: format!("{} line {line}: rule '{}'", path.display(), r.name),
                    prefix: format!("{}#{}", rules.len(), r.name),
                    for_each: r.for_each.is_some(),
                    vars: &file.vars,
                };
                lint::literals(&r, &c.at, &mut c.errors);
                if let (Some(dk), Some(seq)) = (&r.dedup_key, &r.sequence) {
                    sequences.push((c.at.clone(), dk.clone(), seq.clone()));
                }
                if let Some(rule) = compile_rule(&r, path, &mut c, &keys) {
                    if c.errors.is_empty() {
                        rules.push(rule);
                    }
                }
                errors.extend(c.errors.drain(..).map(LoadError::Rule));
            }
        }
        if errors.is_empty() {
            warnings.extend(never_resolves(&rules));
            warnings.extend(lint::mixed_sequences(&sequences));
            warnings.extend(triggers_without_key(&rules));
            warnings.extend(escalates_nothing(&rules));
            let vars = Value::Object(vars);
            Ok((Mapping { rules, paths, strict, lenient, keys, renderer: Renderer::default(), vars }, warnings))
        } else {
            Err(errors)
        }
    }

    /// The same mapping rendering its templates with `renderer` (natively, by default).
    pub fn rendered_by(self, renderer: Renderer) -> Mapping {
        Mapping { renderer, ..self }
    }

    /// How [`Mapping::apply`] renders templates.
    pub fn renderer(&self) -> Renderer {
        self.renderer
    }

    /// Number of compiled rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The parts of a body these rules can read ([`paths`]); computed on each call.
    pub fn body_paths(&self) -> crate::source::Keep {
        paths::body_paths(self)
    }

    /// Runs every rule against a verified request, `accepted` at this time. All matching
    /// rules emit, in file order, until one marked `final` matched. At most `max_events`
    /// events: a `for_each` whose items would pass that is refused before any of them is
    /// rendered, so a huge array costs a count, not a render per item.
    ///
    /// An event whose rule sets no `timestamp` carries `accepted`: pacing or an outage may
    /// hold it for hours, and PagerDuty would otherwise show the time it finally arrived.
    /// The time is passed in (not read here) so that rendering stays pure and repeatable.
    pub fn apply(&self, req: Verified, accepted: SystemTime, max_events: usize) -> Result<Vec<Rendered>, ApplyError> {
        self.apply_via(self.renderer, req, accepted, max_events)
    }

    /// [`Mapping::apply`] rendering with `renderer` whatever the mapping's own is: `pagerhook
    /// test` renders each case both ways.
    pub fn apply_via(
        &self,
        renderer: Renderer,
        req: Verified,
        accepted: SystemTime,
        max_events: usize,
    ) -> Result<Vec<Rendered>, ApplyError> {
        let mut out = Out::new(false, None);
        self.run(renderer, req, accepted, max_events, None, &mut out)?;
        Ok(out.events)
    }

    /// [`Mapping::apply`] with each `for_each` item, and each rule, on its own: one that
    /// fails is listed in [`Applied::failed`] and the others' events are made all the same.
    /// With `only`, just those items and rules are rendered (the replay of those that failed,
    /// which must not send the others again). Only too many events fails the whole request.
    pub fn apply_isolated(
        &self,
        req: Verified,
        accepted: SystemTime,
        max_events: usize,
        only: Option<&[ItemRef]>,
    ) -> Result<Applied, ApplyError> {
        let mut out = Out::new(true, None);
        self.run(self.renderer, req, accepted, max_events, only, &mut out)?;
        Ok(Applied { events: out.events, failed: out.failed })
    }

    /// What a webhook over its caps would have sent, for pagerhook's own page about it: every
    /// event is rendered (the body's size bounds the work) but only counted, its severity and
    /// the first [`Overview::SUMMARIES`] trigger summaries kept, so memory stays flat.
    pub fn overview(&self, req: Verified, accepted: SystemTime) -> Result<Overview, ApplyError> {
        let mut out = Out::new(true, Some(Overview::default()));
        self.run(self.renderer, req, accepted, usize::MAX, None, &mut out)?;
        Ok(out.overview.unwrap_or_default())
    }

    fn run(
        &self,
        renderer: Renderer,
        req: Verified,
        accepted: SystemTime,
        max_events: usize,
        only: Option<&[ItemRef]>,
        out: &mut Out,
    ) -> Result<(), ApplyError> {
        // One handlebars Context per request, built from the request without copying the body:
        // rendering with a plain Value would serialize a deep copy of the payload for every
        // template. `for_each` swaps each item into it.
        let source = req.source().to_string();
        let mut data = req.into_template_context();
        if let Some(m) = data.as_object_mut() {
            m.insert("vars".into(), self.vars.clone());
        }
        let mut ctx = Context::from(data);
        let accepted = rfc3339_millis(accepted);
        // The path walks are shared by every template until a `for_each` changes the context.
        let mut f = Frame::new(&ctx, &self.paths, renderer);
        for rule in &self.rules {
            let Some(items) = Wanted::of(rule, only) else { continue };
            match self.matches(rule, &mut f) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(m) => {
                    out.fail(rule, None, rule_error(rule, "when", m))?;
                    continue;
                }
            }
            match &rule.for_each {
                None => {
                    let emitted = self.emit(rule, &mut f, &ctx.data()["body"], &source, &accepted, out);
                    if let Err((field, m)) = emitted {
                        out.fail(rule, None, rule_error(rule, &field, m))?;
                    }
                }
                Some(path) => {
                    let how = (renderer, source.as_str(), accepted.as_str(), &items);
                    self.emit_each(rule, path, &mut ctx, how, max_events, out)?;
                    f = Frame::new(&ctx, &self.paths, renderer);
                }
            }
            if out.len() > max_events {
                return Err(ApplyError::TooManyEvents { at_least: out.len(), max: max_events });
            }
            if rule.is_final {
                break;
            }
        }
        Ok(())
    }

    /// Emits `rule` once for each item of the array at `path`, each swapped into the context
    /// as `item`; refused before any is rendered when they would pass `max_events`.
    fn emit_each(
        &self,
        rule: &Rule,
        path: &[String],
        ctx: &mut Context,
        (renderer, source, accepted, wanted): (Renderer, &str, &str, &Wanted),
        max_events: usize,
        out: &mut Out,
    ) -> Result<(), ApplyError> {
        let Some(len) = lookup(ctx.data(), path).and_then(Value::as_array).map(Vec::len) else {
            let error = rule_error(rule, "for_each", format!("{} is not an array in this payload", path.join(".")));
            return out.fail(rule, None, error);
        };
        let indexes: Vec<usize> = match wanted {
            Wanted::All => (0..len).collect(),
            Wanted::Items(items) => items.iter().copied().filter(|&i| i < len).collect(),
        };
        if out.len() + indexes.len() > max_events {
            return Err(ApplyError::TooManyEvents { at_least: out.len() + indexes.len(), max: max_events });
        }
        for i in indexes {
            let item = lookup(ctx.data(), path).and_then(|a| a.get(i)).cloned().unwrap_or(Value::Null);
            ctx.data_mut()["item"] = item;
            let mut f = Frame::new(ctx, &self.paths, renderer);
            let emitted = self.emit(rule, &mut f, &ctx.data()["item"], source, accepted, out);
            if let Err((field, m)) = emitted {
                out.fail(rule, Some(i), rule_error(rule, &field, m))?;
            }
        }
        if let Some(m) = ctx.data_mut().as_object_mut() {
            m.remove("item");
        }
        Ok(())
    }

    /// Whether the rule's `when` holds: natively when it has a native form and the payload
    /// lets it decide, else (and for every error) by rendering it.
    fn matches(&self, rule: &Rule, f: &mut Frame<'_>) -> Result<bool, String> {
        let Some(when) = &rule.when else { return Ok(true) };
        if let Some(Ok(holds)) = f.native(when).map(|n| n.holds(&mut f.lookups)) {
            return Ok(holds);
        }
        match self.lenient.render_with_context(&when.id, f.ctx) {
            Ok(v) => Ok(truthy(&v)),
            Err(e) if is_shape_miss(&e) => Ok(false),
            Err(e) => Err(render_error(&e, f.ctx.data())),
        }
    }

    /// A value template's text: natively when it has a native form and the payload lets it
    /// decide, else (and for every error) through handlebars.
    fn text(&self, t: &Tpl, f: &mut Frame<'_>) -> Result<String, String> {
        for &id in &t.written {
            if let Some(shape) = f.lookups.value(id).and_then(object_shape) {
                let p = self.paths.name(id);
                return Err(format!(
                    "{p} is {shape}, which a text field cannot hold (it would read `[object]`): name a field inside it, or write {{{{json {p}}}}} for its JSON"
                ));
            }
        }
        if let Some(Ok(s)) = f.native(t).map(|n| n.render(&mut f.lookups)) {
            return Ok(s);
        }
        self.strict.render_with_context(&t.id, f.ctx).map_err(|e| render_error(&e, f.ctx.data()))
    }

    /// A field's value, trimmed; `None` when that leaves nothing.
    fn render(&self, t: &Tpl, f: &mut Frame<'_>) -> Result<Option<String>, String> {
        let s = self.text(t, f)?;
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        Ok(Some(if trimmed.len() == s.len() { s } else { trimmed.to_string() }))
    }

    fn field(&self, rule: &Rule, name: &'static str, f: &mut Frame<'_>) -> Result<Option<String>, (String, String)> {
        self.render_opt(rule.fields.get(name), f, name)
    }

    /// An optional template's value; `field` names it in an error.
    fn render_opt(&self, t: Option<&Tpl>, f: &mut Frame<'_>, field: &str) -> Result<Option<String>, (String, String)> {
        match t {
            Some(t) => self.render(t, f).map_err(|m| (field.to_string(), m)),
            None => Ok(None),
        }
    }

    /// A `custom_details` value. A failure names where in `custom_details` it happened
    /// (`.key[1]`), a path built only then: a webhook that renders pays no formatting for it.
    fn details(&self, d: &Details, f: &mut Frame<'_>) -> Result<Value, (String, String)> {
        Ok(match d {
            Details::Literal(v) => v.clone(),
            Details::Template { tpl, json } => {
                let s = self.text(tpl, f).map_err(|m| (String::new(), m))?;
                if *json {
                    serde_json::from_str(&s).unwrap_or(Value::String(s))
                } else {
                    Value::String(s)
                }
            }
            Details::Map(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| match self.details(v, f) {
                        Ok(v) => Ok((k.clone(), v)),
                        Err((at, m)) => Err((format!(".{k}{at}"), m)),
                    })
                    .collect::<Result<Map<_, _>, _>>()?,
            ),
            Details::List(l) => Value::Array(
                l.iter()
                    .enumerate()
                    .map(|(i, v)| self.details(v, f).map_err(|(at, m)| (format!("[{i}]{at}"), m)))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    fn routing_key(&self, rule: &Rule, f: &mut Frame<'_>) -> Result<RoutingKey, (String, String)> {
        let name = match &rule.routing {
            Routing::Named(k) => return Ok(k.clone()),
            Routing::Template(id) => self.render(id, f).map_err(|m| ("routing_key".to_string(), m))?,
            Routing::Default => None,
        };
        match name {
            Some(n) => self.keys.named.get(&n).cloned().ok_or_else(|| {
                (
                    "routing_key".to_string(),
                    format!("{n:?} is not a name in [pagerduty.routing_keys] (or not in the source's routing_keys)"),
                )
            }),
            None => self.keys.default.clone().ok_or_else(|| {
                ("routing_key".to_string(), "no routing key: set [pagerduty] routing_key or the source's".to_string())
            }),
        }
    }

    /// The rule's links. Like an image without `src`, a link whose href renders empty is left
    /// out: that is how a mapping writes an optional link (a runbook annotation, a Grafana
    /// panel URL).
    fn links(&self, rule: &Rule, f: &mut Frame<'_>) -> Result<Vec<Link>, (String, String)> {
        let mut links = Vec::new();
        for l in &rule.links {
            let Some(href) = self.render(&l.href, f).map_err(|m| ("links.href".to_string(), m))? else {
                continue;
            };
            links.push(Link { href, text: self.render_opt(l.text.as_ref(), f, "links.text")? });
        }
        Ok(links)
    }

    /// The rule's images; one whose `src` renders empty is left out.
    fn images(&self, rule: &Rule, f: &mut Frame<'_>) -> Result<Vec<Image>, (String, String)> {
        let mut images = Vec::new();
        for i in &rule.images {
            if let Some(src) = self.render(&i.src, f).map_err(|m| ("images.src".to_string(), m))? {
                let href = self.render_opt(i.href.as_ref(), f, "images.href")?;
                images.push(Image { src, href, alt: self.render_opt(i.alt.as_ref(), f, "images.alt")? });
            }
        }
        Ok(images)
    }

    /// `custom_details` as an object: any other rendered shape goes under `details`.
    fn custom_details(&self, rule: &Rule, f: &mut Frame<'_>) -> Result<Option<Value>, (String, String)> {
        Ok(match &rule.custom_details {
            Some(d) => Some(match self.details(d, f).map_err(|(at, m)| (format!("custom_details{at}"), m))? {
                v @ Value::Object(_) => v,
                other => serde_json::json!({ "details": other }),
            }),
            None => None,
        })
    }

    /// The rule's action (`trigger` when it sets none); `None` when its template renders empty.
    fn action(&self, rule: &Rule, f: &mut Frame<'_>) -> Result<Option<String>, (String, String)> {
        match &rule.action {
            Some(id) => self.render(id, f).map_err(|m| ("action".to_string(), m)),
            None => Ok(Some("trigger".to_string())),
        }
    }

    /// The rule's dedup_key, else for a trigger one derived from the payload; an acknowledge
    /// or resolve without one could never match its trigger ([`UNMATCHABLE`]).
    fn dedup_key(
        &self,
        rule: &Rule,
        f: &mut Frame<'_>,
        action: &str,
        source: &str,
        subject: &Value,
    ) -> Result<String, (String, String)> {
        match self.field(rule, "dedup_key", f)? {
            Some(k) => Ok(k),
            None if action.trim().eq_ignore_ascii_case("trigger") => Ok(derived_dedup_key(source, &rule.name, subject)),
            None => Err(("dedup_key".to_string(), UNMATCHABLE.to_string())),
        }
    }

    fn emit(
        &self,
        rule: &Rule,
        f: &mut Frame<'_>,
        subject: &Value,
        source: &str,
        accepted: &str,
        out: &mut Out,
    ) -> Result<(), (String, String)> {
        // An action that renders empty skips the event.
        let Some(action) = self.action(rule, f)? else { return Ok(()) };
        let routing_key = self.routing_key(rule, f)?;
        let links = self.links(rule, f)?;
        let custom_details = self.custom_details(rule, f)?;
        let alert = match rule.emit {
            Emit::Alert => Some((self.images(rule, f)?, self.dedup_key(rule, f, &action, source, subject)?)),
            Emit::Change => None,
        };
        let mut field = |name| self.field(rule, name, f);
        let event = match alert {
            None => Event::change(
                routing_key,
                ChangeDraft {
                    summary: field("summary")?,
                    source: field("source")?,
                    timestamp: field("timestamp")?.or_else(|| Some(accepted.to_string())),
                    links,
                    custom_details,
                },
            ),
            Some((images, dedup_key)) => Event::alert(
                routing_key,
                AlertDraft {
                    action,
                    dedup_key: Some(dedup_key),
                    severity: field("severity")?,
                    summary: field("summary")?,
                    source: field("source")?,
                    component: field("component")?,
                    group: field("group")?,
                    class: field("class")?,
                    timestamp: field("timestamp")?.or_else(|| Some(accepted.to_string())),
                    client: field("client")?,
                    client_url: field("client_url")?,
                    links,
                    images,
                    custom_details,
                },
            ),
        }
        .map_err(|e| ("event".to_string(), e.to_string()))?;
        // An ordering aid, never a gate: a sequence that cannot be rendered (a field the sender
        // left out) leaves the event unchecked, with a note, rather than holding back its page
        // or, worse, its resolve.
        let event = match rule.sequence.as_ref().map(|t| self.render(t, f)) {
            Some(Ok(rendered)) => event.with_sequence(&rendered.unwrap_or_default()),
            Some(Err(why)) => event.unsequenced(&why),
            None => event,
        };
        let event = if rule.escalate { event.with_escalate() } else { event };
        out.push(Rendered { rule: rule.name.clone(), event });
        Ok(())
    }
}

/// `t` in RFC 3339, UTC, to the millisecond (the queue's resolution).
fn rfc3339_millis(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.replace_millisecond(t.millisecond())
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Which actions a rule's `action` template can produce, read from its text: a template that
/// names none of them (`{{body.action}}`) may produce any.
fn may_produce(rule: &Rule) -> (bool, bool) {
    if rule.emit == Emit::Change {
        return (false, false);
    }
    let Some(t) = rule.action_text.as_deref() else { return (true, false) };
    let (trigger, closes) = (t.contains("trigger"), t.contains("resolve") || t.contains("acknowledge"));
    let dynamic = t.contains("{{") && !trigger && !closes;
    (trigger || dynamic, closes || dynamic)
}

/// A source whose alert rules open incidents but that has no rule to close them leaves every
/// incident open until someone resolves it by hand: worth a warning from `check`.
fn never_resolves(rules: &[Rule]) -> Option<String> {
    let (mut opens, mut closes) = (false, false);
    for r in rules {
        let (t, c) = may_produce(r);
        opens |= t;
        closes |= c;
    }
    (opens && !closes).then(|| {
        let files: std::collections::BTreeSet<_> = rules.iter().map(|r| r.file.as_str()).collect();
        format!(
            "{}: alert rules trigger but no rule acknowledges or resolves: every incident stays open until closed by hand in PagerDuty (add a rule with action = \"resolve\" and the trigger's dedup_key)",
            files.into_iter().collect::<Vec<_>>().join(", ")
        )
    })
}

/// In a source that resolves, a trigger rule without `dedup_key` opens incidents under a key
/// derived from its payload, which no resolve rule can build: they stay open. One warning per
/// such rule (a source that never resolves gets [`never_resolves`]'s warning instead).
fn triggers_without_key(rules: &[Rule]) -> Vec<String> {
    if !rules.iter().any(|r| may_produce(r).1) {
        return Vec::new();
    }
    rules
        .iter()
        .filter(|r| may_produce(r).0 && !r.fields.contains_key("dedup_key"))
        .map(|r| {
            format!(
                "{}: rule '{}' triggers without dedup_key while other rules of this source resolve: its incidents get a \
                 key derived from the payload, which no resolve names, so they stay open (set dedup_key, built as the \
                 resolve builds its key)",
                r.file, r.name
            )
        })
        .collect()
}

/// `escalate = true` acts on triggers only: on a rule whose `action` can be nothing else it
/// does nothing, which `check` says.
fn escalates_nothing(rules: &[Rule]) -> Vec<String> {
    rules
        .iter()
        .filter(|r| r.escalate && !may_produce(r).0)
        .map(|r| {
            format!(
                "{}: rule '{}' sets escalate = true but never triggers: escalation acts on triggers (its resolves \
                 close the escalated incidents whatever rule sends them), so it does nothing here",
                r.file, r.name
            )
        })
        .collect()
}

/// A dedup_key for a trigger whose rule sets none: the same source, rule and payload always
/// give the same key, so PagerDuty collapses retries and duplicate deliveries.
fn derived_dedup_key(source: &str, rule: &str, subject: &Value) -> String {
    let mut h = Sha256::new();
    // serde_json's default map is ordered, so equal payloads serialise identically.
    for part in [source.as_bytes(), b"\0", rule.as_bytes(), b"\0", subject.to_string().as_bytes()] {
        h.update(part);
    }
    format!("pagerhook-{}", &hex::encode(h.finalize())[..40])
}

/// A handlebars render error in the mapping's words: where in the template, and what to do,
/// never handlebars' internal name for the template (`0#monitor down.when`).
fn render_error(e: &handlebars::RenderError, data: &Value) -> String {
    use handlebars::RenderErrorReason as R;
    let what = match e.reason() {
        R::MissingVariable(Some(name)) => missing_field(name, data),
        R::MissingVariable(None) => "a field is missing from the payload".to_string(),
        R::InvalidJsonIndex(name) => format!(
            "a list was read by the name `{name}`: the payload has a list where the template expects an object \
             (read a list's element by position: `x.0.{name}`)"
        ),
        other => other.to_string(),
    };
    match (e.line_no, e.column_no) {
        (Some(line), Some(col)) => format!("line {line}, column {col} of the template: {what}"),
        _ => what,
    }
}

/// A missing field, with a way out that cannot hide a typo: a name next to one the payload
/// has is offered as that name; otherwise `default`, quoted so that the hint pastes into a
/// double-quoted TOML value as it is.
fn missing_field(name: &str, data: &Value) -> String {
    let segs: Vec<String> = name.split('.').map(str::to_string).collect();
    if let Some((last, parent)) = segs.split_last() {
        let near = lookup(data, parent)
            .and_then(Value::as_object)
            .and_then(|m| m.keys().find(|k| k.as_str() != last && lint::near(k, last)).cloned());
        if let Some(k) = near {
            let mut fixed = parent.to_vec();
            fixed.push(k);
            return format!("field {name} is missing from the payload: did you mean {}?", fixed.join("."));
        }
    }
    format!("field {name} is missing from the payload (if it is optional, write {{{{default {name} '...'}}}})")
}

/// `when` is lenient for every payload shape: a path that meets a list where it expects an
/// object reads as missing, so the condition is false, as for a missing field.
fn is_shape_miss(e: &handlebars::RenderError) -> bool {
    matches!(e.reason(), handlebars::RenderErrorReason::InvalidJsonIndex(_))
}

/// What an object-holding value is, in words; `None` for one that renders as text (a list of
/// scalars renders `[a, b]`).
fn object_shape(v: &Value) -> Option<&'static str> {
    fn holds_object(v: &Value) -> bool {
        match v {
            Value::Object(_) => true,
            Value::Array(a) => a.iter().any(holds_object),
            _ => false,
        }
    }
    match v {
        Value::Object(_) => Some("an object"),
        Value::Array(a) if a.iter().any(holds_object) => Some("a list of objects"),
        _ => None,
    }
}

fn truthy(rendered: &str) -> bool {
    !matches!(rendered.trim(), "" | "false" | "0" | "null")
}

fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// Adds one file's `[vars]` to `into`; a name another file set to something else is an error,
/// since which value a template would read would depend on the order of the files.
fn merge_vars(into: &mut Map<String, Value>, vars: &toml::Table, path: &Path) -> Vec<LoadError> {
    let mut errors = Vec::new();
    for (name, v) in vars {
        let v = serde_json::to_value(v).unwrap_or(Value::Null);
        match into.get(name) {
            Some(old) if *old != v => errors.push(LoadError::Rule(format!(
                "{}: [vars] {name} = {v} differs from another mapping file's {name} = {old}: one source's \
                 files share their vars, so give it one value (or another name)",
                path.display()
            ))),
            _ => {
                into.insert(name.clone(), v);
            }
        }
    }
    errors
}

/// An acknowledge or resolve finds its incident only by the trigger's dedup_key; without one
/// it would get a derived key that never equals its trigger's, and the incident stays open.
/// A rule whose `action` can say so (the words appear in it) must set `dedup_key`; an action
/// read from the payload is caught when it renders ([`UNMATCHABLE`]).
fn check_resolve_has_dedup_key(r: &RawRule, emit: Emit, c: &mut Compiler<'_>) {
    let Some(action) = r.action.as_deref().filter(|_| emit == Emit::Alert && r.dedup_key.is_none()) else {
        return;
    };
    let action = action.to_ascii_lowercase();
    if action.contains("resolve") || action.contains("acknowledge") {
        c.errors.push(format!("{}: {UNMATCHABLE}", c.at));
    }
}

const UNMATCHABLE: &str = "an acknowledge or resolve needs dedup_key, built the way its trigger's is: \
without it the key is derived from this payload, never matches the trigger, and the incident stays open";

fn compile_rule(r: &RawRule, path: &Path, c: &mut Compiler<'_>, keys: &RoutingKeys) -> Option<Rule> {
    let emit = match r.emit.as_str() {
        "alert" => Emit::Alert,
        "change" => Emit::Change,
        other => {
            c.errors.push(format!("{}: emit = {other:?}: expected \"alert\" or \"change\"", c.at));
            return None;
        }
    };
    if r.name.trim().is_empty() {
        c.errors.push(format!("{}: name is empty", c.at));
    }
    let when = r.when.as_ref().map(|w| c.condition(w));
    let for_each = r.for_each.as_ref().map(|p| {
        let p = p.trim().trim_start_matches("{{").trim_end_matches("}}").trim();
        p.split('.').map(str::to_string).collect::<Vec<_>>()
    });
    if let Some(first) =
        for_each.as_ref().and_then(|p| p.first()).filter(|f| !lint::ROOTS.contains(&f.as_str()) || *f == "item")
    {
        c.errors.push(format!(
            "{}: for_each: unknown root `{first}` (a path starts with one of body, headers, query, source, sns)",
            c.at
        ));
    }
    check_required(r, emit, c);
    Some(Rule {
        name: r.name.clone(),
        file: path.display().to_string(),
        when,
        for_each,
        emit,
        action: c.add_opt("action", &r.action),
        action_text: r.action.clone(),
        fields: compile_fields(r, c),
        links: compile_links(r, c),
        images: compile_images(r, c),
        custom_details: r.custom_details.as_ref().map(|d| c.details("custom_details", d)),
        routing: compile_routing(r, emit, c, keys),
        sequence: c.add_opt("sequence", &r.sequence),
        escalate: r.escalate,
        is_final: r.is_final,
    })
}

/// What a rule must (and, for a change event, must not) set.
fn check_required(r: &RawRule, emit: Emit, c: &mut Compiler<'_>) {
    if emit == Emit::Change {
        for (field, set) in [
            ("action", r.action.is_some()),
            ("dedup_key", r.dedup_key.is_some()),
            ("severity", r.severity.is_some()),
            ("images", !r.images.is_empty()),
            ("component", r.component.is_some()),
            ("group", r.group.is_some()),
            ("class", r.class.is_some()),
            ("sequence", r.sequence.is_some()),
            ("escalate", r.escalate),
        ] {
            if set {
                c.errors.push(format!("{}: {field} is not part of a change event (emit = \"change\")", c.at));
            }
        }
    }
    if r.summary.is_none() {
        c.errors.push(format!("{}: summary is required", c.at));
    }
    check_resolve_has_dedup_key(r, emit, c);
    if emit == Emit::Alert && r.source.is_none() {
        c.errors.push(format!(
            "{}: source is required for alert events (e.g. source = \"{{{{body.repository.full_name}}}}\")",
            c.at
        ));
    }
}

/// The scalar fields' templates, by field name.
fn compile_fields(r: &RawRule, c: &mut Compiler<'_>) -> BTreeMap<&'static str, Tpl> {
    let mut fields = BTreeMap::new();
    for name in SCALARS {
        let v = match *name {
            "dedup_key" => &r.dedup_key,
            "severity" => &r.severity,
            "summary" => &r.summary,
            "source" => &r.source,
            "component" => &r.component,
            "group" => &r.group,
            "class" => &r.class,
            "timestamp" => &r.timestamp,
            "client" => &r.client,
            _ => &r.client_url,
        };
        if let Some(id) = c.add_opt(name, v) {
            fields.insert(*name, id);
        }
    }
    fields
}

fn compile_links(r: &RawRule, c: &mut Compiler<'_>) -> Vec<LinkTpl> {
    let mut links = Vec::new();
    for (i, l) in r.links.iter().enumerate() {
        let href = c.add(&format!("links[{i}].href"), &l.href);
        links.push(LinkTpl { href, text: c.add_opt(&format!("links[{i}].text"), &l.text) });
    }
    links
}

fn compile_images(r: &RawRule, c: &mut Compiler<'_>) -> Vec<ImageTpl> {
    let mut images = Vec::new();
    for (i, l) in r.images.iter().enumerate() {
        let src = c.add(&format!("images[{i}].src"), &l.src);
        let href = c.add_opt(&format!("images[{i}].href"), &l.href);
        images.push(ImageTpl { src, href, alt: c.add_opt(&format!("images[{i}].alt"), &l.alt) });
    }
    images
}

/// Where the rule's events go. A change event on a fixed ruleset key (R…) is refused:
/// PagerDuty answers every one of them 400, so each would become a dead letter.
fn compile_routing(r: &RawRule, emit: Emit, c: &mut Compiler<'_>, keys: &RoutingKeys) -> Routing {
    const RULESET: &str = "a ruleset key (R…), which PagerDuty takes no change events on: route this rule to a \
                           service's integration key with routing_key = \"<name>\", or make it an alert";
    match r.routing_key.as_deref() {
        None => {
            if emit == Emit::Change && keys.default.as_ref().is_some_and(RoutingKey::is_ruleset) {
                c.errors.push(format!("{}: change events go to the source's default key, {RULESET}", c.at));
            }
            Routing::Default
        }
        Some(t) if t.contains("{{") => Routing::Template(c.add("routing_key", t)),
        Some(name) => match keys.named.get(name) {
            Some(k) => {
                if emit == Emit::Change && k.is_ruleset() {
                    c.errors.push(format!("{}: routing key {name:?} is {RULESET}", c.at));
                }
                Routing::Named(k.clone())
            }
            None => {
                c.errors.push(format!(
                    "{}: routing_key {name:?} is not a name in [pagerduty.routing_keys], or not in the source's routing_keys (mapping files name keys; config holds them)",
                    c.at
                ));
                Routing::Default
            }
        },
    }
}

#[cfg(test)]
mod tests;

/// The shipped mapping files under `root`: those `mappings/test-sources.toml` names, not
/// whatever else a user put in `mappings/` (the unit tests must not read their files).
#[cfg(test)]
pub(crate) fn shipped_mapping_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let dir = root.join("mappings");
    let sources: toml::Value =
        toml::from_str(&std::fs::read_to_string(dir.join("test-sources.toml")).unwrap()).unwrap();
    let named = sources["source"].as_array().unwrap().iter().flat_map(|s| s["mappings"].as_array().unwrap().iter());
    named.map(|m| dir.join(m.as_str().unwrap())).collect()
}
