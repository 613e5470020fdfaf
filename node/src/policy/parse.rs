//! Policy text → checked [`Policy`] tree.
//!
//! Parsing uses `pest` (a PEG generator: the grammar lives in
//! `grammar.pest`, errors carry line/column and the set of expected rules,
//! and the generated parser needs no build script). pest was preferred over
//! lalrpop (needs a build step, LR conflicts to manage for little gain on a
//! grammar this small) and chumsky/winnow (grammar spread through code).
//!
//! Untrusted input: the text size and the nesting depth are bounded *before*
//! pest runs (its generated parser recurses once per nested call), every
//! number is range-checked, and no path here panics.

use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::Parser;
use pest_derive::Parser;

use super::ast::*;
use super::claims::ClaimValue;
use super::functions::{compile_query, Function};
use super::limits::ParseLimits;
use super::PolicyParseError;

#[derive(Parser)]
#[grammar = "policy/grammar.pest"]
struct PolicyGrammar;

/// Parse and check policy text.
pub fn parse_policy(text: &str, limits: &ParseLimits) -> Result<Policy, PolicyParseError> {
    if text.len() > limits.max_policy_bytes {
        return Err(PolicyParseError::TooLarge { len: text.len(), max: limits.max_policy_bytes });
    }
    check_nesting(text, limits.max_nesting)?;
    let mut pairs = PolicyGrammar::parse(Rule::policy, text).map_err(|e| syntax_error(text, e))?;
    let root = pairs.next().ok_or_else(|| PolicyParseError::Syntax {
        line: 1,
        column: 1,
        symbol: "<EOF>".into(),
        expected: "a policy".into(),
    })?;
    build_policy(root, limits)
}

/// Reject text that nests brackets deeper than `max` (outside strings and
/// comments) so that the recursive descent below stays shallow.
fn check_nesting(text: &str, max: usize) -> Result<(), PolicyParseError> {
    let bytes = text.as_bytes();
    let (mut depth, mut i, mut line, mut col) = (0usize, 0usize, 1usize, 1usize);
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'"' => {
                // Skip a string literal, honouring backslash escapes.
                i += 1;
                col += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                        col += 1;
                    }
                    if i < bytes.len() && bytes[i] == b'\n' {
                        line += 1;
                        col = 0;
                    }
                    i += 1;
                    col += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    if bytes[i] == b'\n' {
                        line += 1;
                        col = 0;
                    }
                    i += 1;
                    col += 1;
                }
                i += 2;
                col += 2;
                continue;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(PolicyParseError::TooDeep { line, column: col, max });
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'\n' => {
                line += 1;
                col = 0;
            }
            _ => {}
        }
        i += 1;
        col += 1;
    }
    Ok(())
}

fn syntax_error(text: &str, e: pest::error::Error<Rule>) -> PolicyParseError {
    let pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((p, _)) => p,
    };
    let (line, column) = match e.line_col {
        pest::error::LineColLocation::Pos(lc) => lc,
        pest::error::LineColLocation::Span(lc, _) => lc,
    };
    let expected = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut names: Vec<&'static str> = positives.iter().map(|r| rule_label(*r)).collect();
            names.sort_unstable();
            names.dedup();
            join_expected(&names)
        }
        ErrorVariant::CustomError { message } => message.clone(),
    };
    PolicyParseError::Syntax { line, column, symbol: offending_symbol(text, pos), expected }
}

/// The token at `pos`, roughly as an ANTLR lexer would report it.
fn offending_symbol(text: &str, pos: usize) -> String {
    let rest = match text.get(pos..) {
        Some(r) if !r.is_empty() => r,
        _ => return "<EOF>".into(),
    };
    let mut chars = rest.char_indices();
    let first = match chars.next() {
        Some((_, c)) => c,
        None => return "<EOF>".into(),
    };
    let end = if first.is_ascii_alphanumeric() || first == '_' {
        rest.char_indices()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
            .map(|(i, _)| i)
            .unwrap_or(rest.len())
    } else if ["==", "!=", "<=", ">=", "=>", "&&"].iter().any(|op| rest.starts_with(op)) {
        2
    } else {
        first.len_utf8()
    };
    rest.chars().take(end.min(40)).collect()
}

fn join_expected(names: &[&str]) -> String {
    match names {
        [] => "something else".into(),
        [one] => (*one).into(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
    }
}

fn rule_label(r: Rule) -> &'static str {
    match r {
        Rule::policy | Rule::version_stmt | Rule::kw_version => "'version'",
        Rule::version_number => "a version number such as 1.0",
        Rule::section | Rule::section_name => "'configurationrules', 'authorizationrules' or 'issuancerules'",
        Rule::rule | Rule::conditions | Rule::condition => "a rule",
        Rule::binding | Rule::identifier | Rule::claim_ref => "an identifier",
        Rule::property_condition | Rule::claim_property => "'type', 'value', 'valueType' or 'issuer'",
        Rule::comparison_op => "a comparison operator",
        Rule::action | Rule::action_name => "an action (permit, deny, add, issue, issueproperty)",
        Rule::action_arg | Rule::arg_name => "'type', 'value', 'valueType', 'issuer' or 'claim'",
        Rule::expr | Rule::function_call | Rule::property_access => "a value",
        Rule::function_name => "a function name",
        Rule::string | Rule::string_inner => "a string",
        Rule::boolean => "true or false",
        Rule::integer => "an integer",
        Rule::EOI => "end of input",
        Rule::arrow => "'=>'",
        Rule::and_op => "'&&'",
        Rule::negation => "'!'",
        Rule::assign => "'='",
        Rule::semicolon => "';'",
        Rule::colon => "':'",
        Rule::comma => "','",
        Rule::lbrace => "'{'",
        Rule::rbrace => "'}'",
        Rule::lbracket => "'['",
        Rule::rbracket => "']'",
        Rule::lparen => "'('",
        Rule::rparen => "')'",
        _ => "a token",
    }
}

fn semantic(pair: &Pair<'_, Rule>, message: impl Into<String>) -> PolicyParseError {
    let (line, column) = pair.line_col();
    PolicyParseError::Semantic { line, column, message: message.into() }
}

fn build_policy(root: Pair<'_, Rule>, limits: &ParseLimits) -> Result<Policy, PolicyParseError> {
    let mut version = None;
    let mut configuration = None;
    let mut authorization = None;
    let mut issuance = None;
    let mut total_rules = 0usize;
    let mut last_pair = None;
    for pair in root.into_inner() {
        match pair.as_rule() {
            Rule::version_stmt => {
                let num = pair
                    .clone()
                    .into_inner()
                    .find(|p| p.as_rule() == Rule::version_number)
                    .ok_or_else(|| semantic(&pair, "missing version number"))?;
                version = Some(match num.as_str() {
                    "1.0" => PolicyVersion::V1_0,
                    "1.1" => PolicyVersion::V1_1,
                    "1.2" => PolicyVersion::V1_2,
                    other => {
                        return Err(semantic(
                            &num,
                            format!("unsupported policy version '{other}' (expected 1.0, 1.1 or 1.2)"),
                        ))
                    }
                });
            }
            Rule::section => {
                let v = version.ok_or_else(|| semantic(&pair, "missing version"))?;
                let mut inner = pair.clone().into_inner();
                let name = inner.next().ok_or_else(|| semantic(&pair, "missing section name"))?;
                let kind = match name.as_str().to_ascii_lowercase().as_str() {
                    "configurationrules" => SectionKind::Configuration,
                    "authorizationrules" => SectionKind::Authorization,
                    _ => SectionKind::Issuance,
                };
                if kind == SectionKind::Configuration && v < PolicyVersion::V1_1 {
                    return Err(semantic(&name, "configurationrules require policy version 1.1 or later"));
                }
                let mut rules = Vec::new();
                for r in inner.filter(|p| p.as_rule() == Rule::rule) {
                    total_rules += 1;
                    if total_rules > limits.max_rules {
                        return Err(semantic(&r, format!("the policy has more than {} rules", limits.max_rules)));
                    }
                    rules.push(build_rule(r, kind, v)?);
                }
                let slot = match kind {
                    SectionKind::Configuration => &mut configuration,
                    SectionKind::Authorization => &mut authorization,
                    SectionKind::Issuance => &mut issuance,
                };
                if slot.is_some() {
                    return Err(semantic(&name, format!("section '{}' appears more than once", kind.as_str())));
                }
                *slot = Some(rules);
            }
            _ => last_pair = Some(pair),
        }
    }
    let version = version.ok_or(PolicyParseError::Syntax {
        line: 1,
        column: 1,
        symbol: "<EOF>".into(),
        expected: "'version'".into(),
    })?;
    let authorization = match authorization {
        Some(a) => a,
        None => {
            let (line, column) = last_pair.map(|p| p.as_span().start_pos().line_col()).unwrap_or((1, 1));
            return Err(PolicyParseError::Semantic {
                line,
                column,
                message: "the policy has no authorizationrules section".into(),
            });
        }
    };
    Ok(Policy {
        version,
        configuration: configuration.unwrap_or_default(),
        authorization,
        issuance: issuance.unwrap_or_default(),
    })
}

/// Per-rule identifier scope.
struct Scope<'t> {
    names: Vec<&'t str>,
    slot_conditions: Vec<usize>,
    scalar_use: Vec<bool>,
    version: PolicyVersion,
}

impl<'t> Scope<'t> {
    fn resolve(&self, pair: &Pair<'t, Rule>, name: &str) -> Result<usize, PolicyParseError> {
        self.names.iter().position(|n| *n == name).ok_or_else(|| semantic(pair, format!("unknown identifier '{name}'")))
    }
}

fn build_rule(
    pair: Pair<'_, Rule>,
    section: SectionKind,
    version: PolicyVersion,
) -> Result<super::ast::Rule, PolicyParseError> {
    let line = pair.line_col().0;
    let mut scope = Scope { names: Vec::new(), slot_conditions: Vec::new(), scalar_use: Vec::new(), version };
    let mut conditions = Vec::new();
    let mut action = None;
    for part in pair.clone().into_inner() {
        match part.as_rule() {
            Rule::conditions => {
                for c in part.into_inner().filter(|p| p.as_rule() == Rule::condition) {
                    let idx = conditions.len();
                    conditions.push(build_condition(c, &mut scope, idx)?);
                }
            }
            Rule::action => action = Some(build_action(part, section, &mut scope)?),
            _ => {}
        }
    }
    let action = action.ok_or_else(|| semantic(&pair, "missing action"))?;
    for (slot, &cond) in scope.slot_conditions.iter().enumerate() {
        if let Some(c) = conditions.get_mut(cond) {
            c.enumerate = scope.scalar_use.get(slot).copied().unwrap_or(false);
        }
    }
    Ok(super::ast::Rule { conditions, action, slot_conditions: scope.slot_conditions, line })
}

fn build_condition<'t>(
    pair: Pair<'t, Rule>,
    scope: &mut Scope<'t>,
    index: usize,
) -> Result<Condition, PolicyParseError> {
    let mut negated = false;
    let mut binding_name = None;
    let mut properties = Vec::new();
    for part in pair.clone().into_inner() {
        match part.as_rule() {
            Rule::negation => {
                if scope.version < PolicyVersion::V1_2 {
                    return Err(semantic(&part, "the '!' operator requires policy version 1.2"));
                }
                negated = true;
            }
            Rule::binding => binding_name = Some(part),
            Rule::property_condition => properties.push(build_property_condition(part, scope)?),
            _ => {}
        }
    }
    // Bind after the properties so a condition cannot refer to itself.
    let binding = match binding_name {
        Some(b) => {
            if negated {
                return Err(semantic(&b, "a negated condition cannot bind an identifier"));
            }
            if scope.names.contains(&b.as_str()) {
                return Err(semantic(&b, format!("identifier '{}' is bound twice", b.as_str())));
            }
            scope.names.push(b.as_str());
            scope.slot_conditions.push(index);
            scope.scalar_use.push(false);
            Some(scope.names.len() - 1)
        }
        None => None,
    };
    Ok(Condition { negated, binding, enumerate: false, properties })
}

fn build_property_condition<'t>(
    pair: Pair<'t, Rule>,
    scope: &mut Scope<'t>,
) -> Result<PropertyCondition, PolicyParseError> {
    let mut inner = pair.clone().into_inner();
    let (prop, op, rhs) = match (inner.next(), inner.next(), inner.next()) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => return Err(semantic(&pair, "incomplete claim condition")),
    };
    let property = claim_property(prop.as_str());
    let op_kind = match op.as_str() {
        "==" | "=" => CompareOp::Eq,
        "!=" => CompareOp::Ne,
        "<" => CompareOp::Lt,
        "<=" => CompareOp::Le,
        ">" => CompareOp::Gt,
        _ => CompareOp::Ge,
    };
    let rhs_pair = rhs.clone();
    let rhs = build_expr(rhs, scope, false)?;
    let ordering = !matches!(op_kind, CompareOp::Eq | CompareOp::Ne);
    if ordering {
        if property != ClaimProperty::Value {
            return Err(semantic(&op, format!("operator '{}' applies only to integer values", op.as_str())));
        }
        if let Expr::Literal(v) = &rhs {
            if !matches!(v, ClaimValue::Integer(_)) {
                return Err(semantic(&rhs_pair, format!("operator '{}' needs an integer, got {}", op.as_str(), v)));
            }
        }
    }
    if property != ClaimProperty::Value {
        if let Expr::Literal(v) = &rhs {
            if !matches!(v, ClaimValue::String(_)) {
                return Err(semantic(&rhs_pair, format!("expected a string, got {v}")));
            }
        }
    }
    Ok(PropertyCondition { property, op: op_kind, rhs })
}

fn claim_property(s: &str) -> ClaimProperty {
    match s {
        "type" => ClaimProperty::Type,
        "valueType" => ClaimProperty::ValueType,
        "issuer" => ClaimProperty::Issuer,
        _ => ClaimProperty::Value,
    }
}

fn build_action<'t>(
    pair: Pair<'t, Rule>,
    section: SectionKind,
    scope: &mut Scope<'t>,
) -> Result<Action, PolicyParseError> {
    let mut inner = pair.clone().into_inner();
    let name = inner.next().ok_or_else(|| semantic(&pair, "missing action name"))?;
    let allowed: &[&str] = match section {
        SectionKind::Configuration => &["issueproperty"],
        SectionKind::Authorization => &["permit", "deny", "add"],
        SectionKind::Issuance => &["issue", "add", "issueproperty"],
    };
    if !allowed.contains(&name.as_str()) {
        return Err(semantic(
            &name,
            format!(
                "action '{}' is not allowed in {} (allowed: {})",
                name.as_str(),
                section.as_str(),
                allowed.join(", ")
            ),
        ));
    }
    let mut claim_type = None;
    let mut value = None;
    let mut value_type = None;
    let mut whole = None;
    let mut n_args = 0usize;
    for arg in inner.filter(|p| p.as_rule() == Rule::action_arg) {
        n_args += 1;
        let mut parts = arg.clone().into_inner().filter(|p| p.as_rule() != Rule::assign);
        let (key, expr) = match (parts.next(), parts.next()) {
            (Some(k), Some(e)) => (k, e),
            _ => return Err(semantic(&arg, "incomplete argument")),
        };
        let dup = |slot_set: bool| -> Result<(), PolicyParseError> {
            if slot_set {
                Err(semantic(&key, format!("argument '{}' given twice", key.as_str())))
            } else {
                Ok(())
            }
        };
        match key.as_str() {
            "type" => {
                dup(claim_type.is_some())?;
                let e = build_expr(expr.clone(), scope, false)?;
                if let Expr::Literal(v) = &e {
                    if !matches!(v, ClaimValue::String(_)) {
                        return Err(semantic(&expr, "a claim type must be a string"));
                    }
                }
                claim_type = Some(e);
            }
            "value" => {
                dup(value.is_some())?;
                value = Some(build_expr(expr, scope, false)?);
            }
            "valueType" => {
                dup(value_type.is_some())?;
                match build_expr(expr.clone(), scope, false)? {
                    Expr::Literal(ClaimValue::String(s)) if matches!(s.as_str(), "String" | "Integer" | "Boolean") => {
                        value_type = Some(s)
                    }
                    _ => return Err(semantic(&expr, "valueType must be \"String\", \"Integer\" or \"Boolean\"")),
                }
            }
            "claim" => {
                dup(whole.is_some())?;
                match build_expr(expr.clone(), scope, false)? {
                    Expr::ClaimRef { slot } => whole = Some(slot),
                    _ => return Err(semantic(&expr, "claim= needs a bound identifier")),
                }
            }
            // `issuer=` on an action is accepted and ignored: claims the
            // policy adds are always issued by AttestationPolicy.
            _ => {
                build_expr(expr, scope, false)?;
            }
        }
    }
    let template = |pair: &Pair<'t, Rule>| -> Result<ClaimTemplate, PolicyParseError> {
        if let Some(slot) = whole {
            if n_args != 1 {
                return Err(semantic(pair, "claim= cannot be combined with other arguments"));
            }
            return Ok(ClaimTemplate::Whole { slot });
        }
        match (claim_type, value) {
            (Some(claim_type), Some(value)) => Ok(ClaimTemplate::Parts { claim_type, value, value_type }),
            _ => Err(semantic(pair, "expected type=… and value=… (or claim=…)")),
        }
    };
    Ok(match name.as_str() {
        "permit" | "deny" => {
            if n_args != 0 {
                return Err(semantic(&name, format!("{}() takes no arguments", name.as_str())));
            }
            if name.as_str() == "permit" {
                Action::Permit
            } else {
                Action::Deny
            }
        }
        "add" => Action::Add(template(&pair)?),
        "issue" => Action::Issue(template(&pair)?),
        _ => match template(&pair)? {
            ClaimTemplate::Whole { .. } => return Err(semantic(&pair, "issueproperty needs type=… and value=…")),
            t => Action::IssueProperty(t),
        },
    })
}

fn build_expr<'t>(pair: Pair<'t, Rule>, scope: &mut Scope<'t>, set_context: bool) -> Result<Expr, PolicyParseError> {
    // `expr` wraps exactly one alternative.
    let node = if pair.as_rule() == Rule::expr {
        pair.clone().into_inner().next().ok_or_else(|| semantic(&pair, "empty expression"))?
    } else {
        pair
    };
    match node.as_rule() {
        Rule::string => {
            let inner = node.clone().into_inner().next().map(|p| p.as_str()).unwrap_or("");
            Ok(Expr::Literal(ClaimValue::String(unescape(inner))))
        }
        Rule::boolean => Ok(Expr::Literal(ClaimValue::Boolean(node.as_str() == "true"))),
        Rule::integer => parse_integer(node.as_str())
            .map(|i| Expr::Literal(ClaimValue::Integer(i)))
            .ok_or_else(|| semantic(&node, format!("integer '{}' is out of range", node.as_str()))),
        Rule::property_access => {
            let mut it = node.clone().into_inner();
            let (id, prop) = match (it.next(), it.next()) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(semantic(&node, "malformed property access")),
            };
            let slot = scope.resolve(&id, id.as_str())?;
            let property = claim_property(prop.as_str());
            if set_context {
                Ok(Expr::SetOf { slot, property })
            } else {
                if let Some(u) = scope.scalar_use.get_mut(slot) {
                    *u = true;
                }
                Ok(Expr::Property { slot, property })
            }
        }
        Rule::claim_ref => {
            let slot = scope.resolve(&node, node.as_str())?;
            if let Some(u) = scope.scalar_use.get_mut(slot) {
                *u = true;
            }
            Ok(Expr::ClaimRef { slot })
        }
        Rule::function_call => {
            if scope.version < PolicyVersion::V1_2 {
                return Err(semantic(&node, "functions require policy version 1.2"));
            }
            let mut it = node.clone().into_inner();
            let name = it.next().ok_or_else(|| semantic(&node, "missing function name"))?;
            let mut function = Function::by_name(name.as_str())
                .ok_or_else(|| semantic(&name, format!("unknown function '{}'", name.as_str())))?;
            let arg_pairs: Vec<_> = it.filter(|p| p.as_rule() == Rule::expr).collect();
            if arg_pairs.len() != function.arity() {
                return Err(semantic(
                    &name,
                    format!("{} takes {} argument(s), got {}", function.name(), function.arity(), arg_pairs.len()),
                ));
            }
            let mut args = Vec::with_capacity(arg_pairs.len());
            for (i, a) in arg_pairs.into_iter().enumerate() {
                let takes_set = function.takes_set(i);
                args.push(build_expr(a, scope, takes_set)?);
            }
            // Compile literal JmesPath queries once, here.
            if let (Function::JmesPath { compiled }, Some(Expr::Literal(ClaimValue::String(q)))) =
                (&mut function, args.get(1))
            {
                let expr = compile_query(q).map_err(|e| semantic(&name, e.to_string()))?;
                *compiled = Some(Box::new(expr));
            }
            Ok(Expr::Call { function, args })
        }
        _ => Err(semantic(&node, "unexpected expression")),
    }
}

fn parse_integer(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let magnitude = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok()?,
        None => digits.parse::<i64>().ok()?,
    };
    if neg {
        magnitude.checked_neg()
    } else {
        Some(magnitude)
    }
}

/// Resolve backslash escapes in a string literal (`\"`, `\\`, `\n`, `\t`,
/// `\r`; any other escaped character stands for itself).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}
