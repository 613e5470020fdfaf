//! The checked syntax tree of a policy. Built by `parse`, read by `eval`.
//! Identifiers are resolved to slot numbers at parse time so evaluation
//! never looks names up.

use super::claims::ClaimValue;
use super::functions::Function;

/// A policy language version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PolicyVersion {
    V1_0,
    V1_1,
    V1_2,
}

impl PolicyVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyVersion::V1_0 => "1.0",
            PolicyVersion::V1_1 => "1.1",
            PolicyVersion::V1_2 => "1.2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    Configuration,
    Authorization,
    Issuance,
}

impl SectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SectionKind::Configuration => "configurationrules",
            SectionKind::Authorization => "authorizationrules",
            SectionKind::Issuance => "issuancerules",
        }
    }
}

/// A claim property named in a condition or a property access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimProperty {
    Type,
    Value,
    ValueType,
    Issuer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// An expression: a literal, `id.property`, a bare `id` (only in
/// `issue(claim=id)`), or a function call.
#[derive(Debug)]
pub enum Expr {
    Literal(ClaimValue),
    Property {
        slot: usize,
        property: ClaimProperty,
    },
    /// `id.property` read as a set (an argument of `IsSubsetOf` or
    /// `ContainsOnlyValue`): the property of every claim matching `id`'s condition.
    SetOf {
        slot: usize,
        property: ClaimProperty,
    },
    ClaimRef {
        slot: usize,
    },
    Call {
        function: Function,
        args: Vec<Expr>,
    },
}

#[derive(Debug)]
pub struct PropertyCondition {
    pub property: ClaimProperty,
    pub op: CompareOp,
    pub rhs: Expr,
}

#[derive(Debug)]
pub struct Condition {
    pub negated: bool,
    /// Slot of the `id:` binding, if any.
    pub binding: Option<usize>,
    /// Whether the rule must be fired once per matching claim (the binding is
    /// read as a single value somewhere); otherwise existence is enough.
    pub enumerate: bool,
    pub properties: Vec<PropertyCondition>,
}

/// What a rule does when its conditions hold.
#[derive(Debug)]
pub enum Action {
    Permit,
    Deny,
    /// `add(...)`: into the incoming set only.
    Add(ClaimTemplate),
    /// `issue(...)`: into the incoming set and the token.
    Issue(ClaimTemplate),
    /// `issueproperty(...)`: a token property or engine setting.
    IssueProperty(ClaimTemplate),
}

/// The arguments of `add`/`issue`/`issueproperty`.
#[derive(Debug)]
pub enum ClaimTemplate {
    /// `type=…, value=…[, valueType=…]`.
    Parts { claim_type: Expr, value: Expr, value_type: Option<String> },
    /// `claim=id`.
    Whole { slot: usize },
}

#[derive(Debug)]
pub struct Rule {
    pub conditions: Vec<Condition>,
    pub action: Action,
    /// For each binding slot, the index of the condition that binds it.
    pub slot_conditions: Vec<usize>,
    /// 1-based source line, for messages.
    pub line: usize,
}

/// A parsed policy.
#[derive(Debug)]
pub struct Policy {
    pub version: PolicyVersion,
    pub configuration: Vec<Rule>,
    pub authorization: Vec<Rule>,
    pub issuance: Vec<Rule>,
}
