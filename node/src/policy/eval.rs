//! Evaluation with MAA's semantics.
//!
//! * Sections run in order: configuration (once, at compile time: it sets
//!   engine properties before any evidence is seen), authorization, issuance.
//! * Rules run in order. A condition holds if at least one claim matches all
//!   its property conditions (`!` inverts: no claim matches). Claims added by
//!   a rule are visible to the rules after it, not to the rule itself.
//! * A rule whose bound identifiers are read as single values (`c.value`,
//!   `claim=c`) fires once per combination of matching claims, as in the
//!   claim-rule language MAA's grammar comes from; a condition whose claim is
//!   not read that way is only an existence test, so unrelated conditions
//!   never multiply. `c.value` as an argument of `IsSubsetOf` /
//!   `ContainsOnlyValue` is the set of values of every claim matching `c`.
//! * Authorization succeeds only if some rule permits and none denies.
//! * Work is bounded (claim comparisons, firings, added claims) so that a
//!   hostile policy cannot make evaluation explode.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::ast::*;
use super::claims::{Claim, ClaimIssuer, ClaimValue};
use super::functions::Val;
use super::limits;

/// Why evaluation failed. The API layer maps every variant to MAA's
/// `PolicyEvaluationError`; denial carries MAA's exact message.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum EvalError {
    /// A `deny()` rule fired.
    #[error("A Deny claim was issued, authorization failed.")]
    Denied,
    /// No authorization rule permitted.
    #[error("A Deny claim was issued, authorization failed. (No authorization rule permitted issuance.)")]
    NotPermitted,
    #[error("{function}: {message}")]
    Function { function: &'static str, message: String },
    #[error("invalid value for property '{name}': {message}")]
    InvalidProperty { name: String, message: String },
    #[error("{0}")]
    InvalidClaim(String),
    #[error("policy evaluation exceeded its budget: {0}")]
    TooExpensive(&'static str),
    #[error("{section} rule at line {line}: {source}")]
    InRule { section: &'static str, line: usize, source: Box<EvalError> },
}

impl EvalError {
    fn in_rule(self, section: SectionKind, line: usize) -> EvalError {
        match self {
            EvalError::Denied | EvalError::NotPermitted | EvalError::TooExpensive(_) | EvalError::InRule { .. } => self,
            other => EvalError::InRule { section: section.as_str(), line, source: Box::new(other) },
        }
    }
}

/// Token properties and engine settings set with `issueproperty`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyProperties {
    /// `report_validity_in_minutes`: token lifetime (1 minute … 1 year).
    pub token_validity_minutes: Option<u32>,
    /// `omit_x5c`: put `x5t` instead of `x5c` in the token header.
    pub omit_x5c: Option<bool>,
    /// `x-ms-sgx-tcbidentifier`: SGX TCB baseline (`azuredefault`, `10`, …).
    pub tcb_identifier: Option<String>,
    /// `required_pcr_mask`: TPM PCRs that must be quoted (24 bits).
    pub required_pcr_mask: Option<u32>,
    /// `require_valid_aik_cert`: TPM AIK must chain to a trusted root.
    pub require_valid_aik_cert: Option<bool>,
    /// Any other property, kept verbatim.
    pub other: BTreeMap<String, serde_json::Value>,
}

impl PolicyProperties {
    pub const DEFAULT_TCB_IDENTIFIER: &'static str = "azuredefault";
    pub const DEFAULT_REQUIRED_PCR_MASK: u32 = 0x00FF_FFFF;

    pub fn tcb_identifier_or_default(&self) -> &str {
        self.tcb_identifier.as_deref().unwrap_or(Self::DEFAULT_TCB_IDENTIFIER)
    }

    pub fn required_pcr_mask_or_default(&self) -> u32 {
        self.required_pcr_mask.unwrap_or(Self::DEFAULT_REQUIRED_PCR_MASK)
    }

    pub fn require_valid_aik_cert_or_default(&self) -> bool {
        self.require_valid_aik_cert.unwrap_or(true)
    }

    fn set(&mut self, name: &str, value: &ClaimValue) -> Result<(), EvalError> {
        let bad = |message: &str| EvalError::InvalidProperty { name: name.to_owned(), message: message.to_owned() };
        match name {
            "report_validity_in_minutes" => match value {
                ClaimValue::Integer(i) if (1..=limits::MAX_TOKEN_VALIDITY_MINUTES).contains(i) => {
                    self.token_validity_minutes = u32::try_from(*i).ok();
                }
                _ => return Err(bad("expected an integer from 1 to 525600 (one year)")),
            },
            "omit_x5c" => match value {
                ClaimValue::Boolean(b) => self.omit_x5c = Some(*b),
                _ => return Err(bad("expected a Boolean")),
            },
            "x-ms-sgx-tcbidentifier" => match value {
                ClaimValue::String(s) if !s.is_empty() && s.len() <= 64 => self.tcb_identifier = Some(s.clone()),
                _ => return Err(bad("expected a non-empty string")),
            },
            "required_pcr_mask" => match value {
                ClaimValue::Integer(i) if (0..=0x00FF_FFFF).contains(i) => {
                    self.required_pcr_mask = u32::try_from(*i).ok();
                }
                _ => return Err(bad("expected an integer from 0 to 0xFFFFFF")),
            },
            "require_valid_aik_cert" => match value {
                ClaimValue::Boolean(b) => self.require_valid_aik_cert = Some(*b),
                _ => return Err(bad("expected a Boolean")),
            },
            _ => {
                if self.other.len() >= limits::MAX_OTHER_PROPERTIES {
                    return Err(bad("too many properties"));
                }
                self.other.insert(name.to_owned(), value.to_json());
            }
        }
        Ok(())
    }

    fn merge_from(&mut self, o: &PolicyProperties) {
        if o.token_validity_minutes.is_some() {
            self.token_validity_minutes = o.token_validity_minutes;
        }
        if o.omit_x5c.is_some() {
            self.omit_x5c = o.omit_x5c;
        }
        if o.tcb_identifier.is_some() {
            self.tcb_identifier.clone_from(&o.tcb_identifier);
        }
        if o.required_pcr_mask.is_some() {
            self.required_pcr_mask = o.required_pcr_mask;
        }
        if o.require_valid_aik_cert.is_some() {
            self.require_valid_aik_cert = o.require_valid_aik_cert;
        }
        for (k, v) in &o.other {
            self.other.insert(k.clone(), v.clone());
        }
    }
}

/// The result of a successful evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationOutcome {
    /// Claims the issuance rules issued, for the token (MAA puts them under
    /// `x-ms-policy`, and the legacy names also at the top level). A type
    /// issued more than once maps to a JSON array of its values.
    pub issued_claims: serde_json::Map<String, serde_json::Value>,
    /// Configuration properties merged with those issued by issuance rules.
    pub properties: PolicyProperties,
    /// Every claim the policy added to the incoming set, in order.
    pub added_claims: Vec<Claim>,
}

/// The incoming claims plus what rules have added so far.
struct View<'a> {
    input: &'a [Claim],
    added: &'a [Claim],
}

impl<'a> View<'a> {
    fn len(&self) -> usize {
        self.input.len() + self.added.len()
    }

    fn get(&self, i: usize) -> Option<&'a Claim> {
        if i < self.input.len() {
            self.input.get(i)
        } else {
            self.added.get(i - self.input.len())
        }
    }
}

struct Budget {
    steps: usize,
}

impl Budget {
    fn step(&mut self) -> Result<(), EvalError> {
        self.steps += 1;
        if self.steps > limits::MAX_MATCH_STEPS {
            Err(EvalError::TooExpensive("too many claim comparisons"))
        } else {
            Ok(())
        }
    }
}

/// What one section's evaluation produced.
#[derive(Default)]
struct SectionState {
    permitted: bool,
    denied: bool,
    /// Positions in the section's `added` claims of the claims issued.
    issued: Vec<usize>,
    properties: PolicyProperties,
}

/// Evaluate one section over `input` + `added`, appending to `added`.
pub(super) fn run_section(
    rules: &[super::ast::Rule],
    kind: SectionKind,
    input: &[Claim],
    added: &mut Vec<Claim>,
    state_out: &mut PolicyProperties,
    issued_out: &mut Vec<usize>,
    budget_steps: &mut usize,
) -> Result<(bool, bool), EvalError> {
    let mut state = SectionState::default();
    let mut budget = Budget { steps: *budget_steps };
    let mut bind: Vec<usize> = Vec::new();
    for rule in rules {
        let mut pending: Vec<Claim> = Vec::new();
        let base = added.len();
        {
            let view = View { input, added: added.as_slice() };
            bind.clear();
            bind.resize(rule.slot_conditions.len(), usize::MAX);
            let mut firings = 0usize;
            let mut on_fire = |bind: &[usize], budget: &mut Budget| -> Result<bool, EvalError> {
                firings += 1;
                if firings > limits::MAX_FIRINGS_PER_RULE {
                    return Err(EvalError::TooExpensive("a rule fired too many times"));
                }
                apply_action(rule, &view, bind, budget, &mut state, &mut pending, base)
            };
            enumerate(rule, &view, 0, &mut bind, &mut budget, &mut on_fire).map_err(|e| e.in_rule(kind, rule.line))?;
        }
        if added.len() + pending.len() > limits::MAX_ADDED_CLAIMS {
            return Err(EvalError::TooExpensive("too many claims added"));
        }
        added.append(&mut pending);
        if state.denied {
            // Nothing after a deny can change the outcome.
            break;
        }
    }
    *budget_steps = budget.steps;
    state_out.merge_from(&state.properties);
    issued_out.append(&mut state.issued);
    Ok((state.permitted, state.denied))
}

/// Called once per satisfying binding; returns whether to keep enumerating.
type FireFn<'f> = dyn FnMut(&[usize], &mut Budget) -> Result<bool, EvalError> + 'f;

/// Walk conditions `ci..`, calling `fire` for each satisfying binding.
/// Returns false once `fire` asked to stop.
fn enumerate<'a>(
    rule: &'a super::ast::Rule,
    view: &View<'a>,
    ci: usize,
    bind: &mut Vec<usize>,
    budget: &mut Budget,
    fire: &mut FireFn<'_>,
) -> Result<bool, EvalError> {
    let cond = match rule.conditions.get(ci) {
        Some(c) => c,
        None => return fire(bind, budget),
    };
    if cond.negated {
        for i in 0..view.len() {
            budget.step()?;
            if let Some(claim) = view.get(i) {
                if claim_matches(rule, view, cond, claim, bind, budget)? {
                    return Ok(true);
                }
            }
        }
        return enumerate(rule, view, ci + 1, bind, budget, fire);
    }
    for i in 0..view.len() {
        budget.step()?;
        let claim = match view.get(i) {
            Some(c) => c,
            None => continue,
        };
        if !claim_matches(rule, view, cond, claim, bind, budget)? {
            continue;
        }
        if let Some(slot) = cond.binding {
            if let Some(b) = bind.get_mut(slot) {
                *b = i;
            }
        }
        let keep_going = enumerate(rule, view, ci + 1, bind, budget, fire)?;
        if !keep_going {
            return Ok(false);
        }
        if !cond.enumerate {
            // Existence test: one match is all this condition contributes.
            return Ok(true);
        }
    }
    Ok(true)
}

fn claim_matches<'a>(
    rule: &'a super::ast::Rule,
    view: &View<'a>,
    cond: &'a Condition,
    claim: &'a Claim,
    bind: &[usize],
    budget: &mut Budget,
) -> Result<bool, EvalError> {
    for pc in &cond.properties {
        let rhs = eval_expr(rule, view, &pc.rhs, bind, budget)?;
        let ok = match &rhs {
            Val::One(v) => compare(claim, pc.property, pc.op, v),
            Val::Set(vs) => match pc.op {
                CompareOp::Ne => vs.iter().all(|v| compare(claim, pc.property, pc.op, v)),
                _ => vs.iter().any(|v| compare(claim, pc.property, pc.op, v)),
            },
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn compare(claim: &Claim, property: ClaimProperty, op: CompareOp, rhs: &ClaimValue) -> bool {
    let text = |s: &str| -> bool {
        let eq = match rhs {
            ClaimValue::String(r) => r == s,
            ClaimValue::Json(serde_json::Value::String(r)) => r == s,
            _ => false,
        };
        match op {
            CompareOp::Eq => eq,
            CompareOp::Ne => !eq,
            _ => false,
        }
    };
    match property {
        ClaimProperty::Type => text(&claim.claim_type),
        ClaimProperty::Issuer => text(claim.issuer.as_str()),
        ClaimProperty::ValueType => text(claim.value.value_type()),
        ClaimProperty::Value => match op {
            CompareOp::Eq => claim.value.policy_eq(rhs),
            CompareOp::Ne => !claim.value.policy_eq(rhs),
            _ => match (&claim.value, rhs) {
                (ClaimValue::Integer(a), ClaimValue::Integer(b)) => match op {
                    CompareOp::Lt => a < b,
                    CompareOp::Le => a <= b,
                    CompareOp::Gt => a > b,
                    _ => a >= b,
                },
                _ => false,
            },
        },
    }
}

fn property_of(claim: &Claim, property: ClaimProperty) -> Cow<'_, ClaimValue> {
    match property {
        ClaimProperty::Value => Cow::Borrowed(&claim.value),
        ClaimProperty::Type => Cow::Owned(ClaimValue::String(claim.claim_type.clone())),
        ClaimProperty::Issuer => Cow::Owned(ClaimValue::from(claim.issuer.as_str())),
        ClaimProperty::ValueType => Cow::Owned(ClaimValue::from(claim.value.value_type())),
    }
}

fn bound<'a>(view: &View<'a>, bind: &[usize], slot: usize) -> Result<&'a Claim, EvalError> {
    bind.get(slot)
        .and_then(|&i| view.get(i))
        .ok_or_else(|| EvalError::InvalidClaim("identifier is not bound here".into()))
}

fn eval_expr<'a>(
    rule: &'a super::ast::Rule,
    view: &View<'a>,
    expr: &'a Expr,
    bind: &[usize],
    budget: &mut Budget,
) -> Result<Val<'a>, EvalError> {
    match expr {
        Expr::Literal(v) => Ok(Val::One(Cow::Borrowed(v))),
        Expr::Property { slot, property } => Ok(Val::One(property_of(bound(view, bind, *slot)?, *property))),
        // A bare identifier outside `claim=` reads as its value.
        Expr::ClaimRef { slot } => Ok(Val::One(Cow::Borrowed(&bound(view, bind, *slot)?.value))),
        Expr::SetOf { slot, property } => {
            let cond = rule
                .slot_conditions
                .get(*slot)
                .and_then(|&ci| rule.conditions.get(ci))
                .ok_or_else(|| EvalError::InvalidClaim("unknown identifier".into()))?;
            let mut out = Vec::new();
            for i in 0..view.len() {
                budget.step()?;
                if let Some(claim) = view.get(i) {
                    if claim_matches(rule, view, cond, claim, bind, budget)? {
                        out.push(property_of(claim, *property).into_owned());
                    }
                }
            }
            Ok(Val::Set(out))
        }
        Expr::Call { function, args } => {
            let mut vals = Vec::with_capacity(args.len());
            for a in args {
                vals.push(eval_expr(rule, view, a, bind, budget)?);
            }
            function.call(vals)
        }
    }
}

/// Run the rule's action for one satisfying binding. Returns whether the
/// enumeration should continue.
fn apply_action<'a>(
    rule: &'a super::ast::Rule,
    view: &View<'a>,
    bind: &[usize],
    budget: &mut Budget,
    state: &mut SectionState,
    pending: &mut Vec<Claim>,
    base: usize,
) -> Result<bool, EvalError> {
    match &rule.action {
        Action::Permit => {
            state.permitted = true;
            Ok(false)
        }
        Action::Deny => {
            state.denied = true;
            Ok(false)
        }
        Action::Add(t) => {
            instantiate(rule, view, t, bind, budget, pending)?;
            Ok(true)
        }
        Action::Issue(t) => {
            let start = pending.len();
            instantiate(rule, view, t, bind, budget, pending)?;
            state.issued.extend((start..pending.len()).map(|i| base + i));
            Ok(true)
        }
        Action::IssueProperty(t) => {
            let mut props = Vec::new();
            instantiate(rule, view, t, bind, budget, &mut props)?;
            for c in &props {
                state.properties.set(&c.claim_type, &c.value)?;
            }
            Ok(true)
        }
    }
}

/// Push the claims an `add`/`issue`/`issueproperty` produces onto `out`
/// (none for an empty value, several for a set).
fn instantiate<'a>(
    rule: &'a super::ast::Rule,
    view: &View<'a>,
    t: &'a ClaimTemplate,
    bind: &[usize],
    budget: &mut Budget,
    out: &mut Vec<Claim>,
) -> Result<(), EvalError> {
    match t {
        ClaimTemplate::Whole { slot } => {
            let c = bound(view, bind, *slot)?;
            out.push(Claim::new(c.claim_type.clone(), c.value.clone(), ClaimIssuer::AttestationPolicy));
            Ok(())
        }
        ClaimTemplate::Parts { claim_type, value, value_type } => {
            let ty = match eval_expr(rule, view, claim_type, bind, budget)? {
                Val::One(v) => match v.into_owned() {
                    ClaimValue::String(s) if !s.is_empty() => s,
                    ClaimValue::Json(serde_json::Value::String(s)) if !s.is_empty() => s,
                    other => {
                        return Err(EvalError::InvalidClaim(format!(
                            "a claim type must be a non-empty string, got {other}"
                        )))
                    }
                },
                Val::Set(_) => return Err(EvalError::InvalidClaim("a claim type must be a single string".into())),
            };
            let typed = |v: ClaimValue| match value_type.as_deref() {
                Some(vt) => coerce(v, vt),
                None => Ok(v),
            };
            match eval_expr(rule, view, value, bind, budget)? {
                Val::One(v) => {
                    out.push(Claim::new(ty, typed(v.into_owned())?, ClaimIssuer::AttestationPolicy));
                }
                Val::Set(vs) => {
                    for v in vs {
                        out.push(Claim::new(ty.clone(), typed(v)?, ClaimIssuer::AttestationPolicy));
                    }
                }
            }
            Ok(())
        }
    }
}

/// Apply an explicit `valueType=` to a value.
fn coerce(v: ClaimValue, value_type: &str) -> Result<ClaimValue, EvalError> {
    if v.value_type() == value_type && !matches!(v, ClaimValue::Json(_)) {
        return Ok(v);
    }
    let text = match &v {
        ClaimValue::String(s) => s.clone(),
        ClaimValue::Json(serde_json::Value::String(s)) => s.clone(),
        other => other.to_json().to_string(),
    };
    let out = match value_type {
        "Integer" => text.trim().parse::<i64>().ok().map(ClaimValue::Integer),
        "Boolean" => match text.trim() {
            "true" => Some(ClaimValue::Boolean(true)),
            "false" => Some(ClaimValue::Boolean(false)),
            _ => None,
        },
        _ => Some(ClaimValue::String(text)),
    };
    out.ok_or_else(|| EvalError::InvalidClaim(format!("value {v} cannot be read as {value_type}")))
}

/// Build token claims from the issued claims (positions in `added`); a
/// type issued more than once becomes an array of its values in issue order.
pub(super) fn group_issued(added: &[Claim], issued: &[usize]) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    // Types already turned into arrays (a value may itself be an array).
    let mut multi: Vec<&str> = Vec::new();
    for c in issued.iter().filter_map(|&i| added.get(i)) {
        let v = c.value.to_json();
        match map.get_mut(&c.claim_type) {
            None => {
                map.insert(c.claim_type.clone(), v);
            }
            Some(existing) => {
                if multi.contains(&c.claim_type.as_str()) {
                    if let serde_json::Value::Array(a) = existing {
                        a.push(v);
                    }
                } else {
                    let first = existing.take();
                    *existing = serde_json::Value::Array(vec![first, v]);
                    multi.push(&c.claim_type);
                }
            }
        }
    }
    map
}
