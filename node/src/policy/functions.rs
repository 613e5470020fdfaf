//! Built-in functions of policy version 1.2: `JmesPath`, `JsonToClaimValue`,
//! `IsSubsetOf`, `AppendString`, `NegateBool`, `ContainsOnlyValue`.
//!
//! JmesPath uses the `jmespath` crate (the reference Rust implementation by
//! the JMESPath author, built with its `sync` feature so compiled
//! expressions are `Send + Sync`). Queries that are string literals are
//! compiled once, when the policy is parsed.

use std::borrow::Cow;
use std::fmt;

use super::claims::ClaimValue;
use super::eval::EvalError;
use super::limits;

/// A value during evaluation: one claim value or a set of them (several
/// claims of one type, or a JSON array converted by `JsonToClaimValue`).
/// The empty set is MAA's "empty claim value" (JSON null).
#[derive(Debug, Clone)]
pub enum Val<'a> {
    One(Cow<'a, ClaimValue>),
    Set(Vec<ClaimValue>),
}

impl<'a> Val<'a> {
    pub fn owned(v: ClaimValue) -> Val<'static> {
        Val::One(Cow::Owned(v))
    }

    fn into_set(self) -> Vec<ClaimValue> {
        match self {
            Val::One(v) => vec![v.into_owned()],
            Val::Set(s) => s,
        }
    }
}

/// A built-in function, with any data prepared at parse time.
pub enum Function {
    /// `JmesPath(json, query)`; `compiled` is set when the query is a literal.
    JmesPath {
        compiled: Option<Box<jmespath::Expression<'static>>>,
    },
    JsonToClaimValue,
    IsSubsetOf,
    AppendString,
    NegateBool,
    ContainsOnlyValue,
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Function {
    /// Resolve a function name as written in policy text (case-sensitive, as
    /// documented).
    pub fn by_name(name: &str) -> Option<Function> {
        Some(match name {
            "JmesPath" => Function::JmesPath { compiled: None },
            "JsonToClaimValue" => Function::JsonToClaimValue,
            "IsSubsetOf" => Function::IsSubsetOf,
            "AppendString" => Function::AppendString,
            "NegateBool" => Function::NegateBool,
            "ContainsOnlyValue" => Function::ContainsOnlyValue,
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Function::JmesPath { .. } => "JmesPath",
            Function::JsonToClaimValue => "JsonToClaimValue",
            Function::IsSubsetOf => "IsSubsetOf",
            Function::AppendString => "AppendString",
            Function::NegateBool => "NegateBool",
            Function::ContainsOnlyValue => "ContainsOnlyValue",
        }
    }

    pub fn arity(&self) -> usize {
        match self {
            Function::JsonToClaimValue | Function::NegateBool => 1,
            _ => 2,
        }
    }

    /// Whether argument `index` is read as a set: `c.value` there means the
    /// values of every claim matching `c`'s condition, not one of them.
    pub fn takes_set(&self, index: usize) -> bool {
        match self {
            Function::IsSubsetOf => true,
            Function::ContainsOnlyValue => index == 0,
            _ => false,
        }
    }

    /// Apply the function to evaluated arguments (already checked for arity).
    pub fn call(&self, args: Vec<Val<'_>>) -> Result<Val<'static>, EvalError> {
        let mut it = args.into_iter();
        let (a, b) = (it.next(), it.next());
        match self {
            Function::JmesPath { compiled } => {
                let doc = json_arg(self, a)?;
                let result = match compiled {
                    Some(expr) => search(expr, &doc)?,
                    None => {
                        let query = string_arg(self, b)?;
                        let expr = compile_query(&query)?;
                        search(&expr, &doc)?
                    }
                };
                Ok(Val::owned(ClaimValue::Json(result)))
            }
            Function::JsonToClaimValue => {
                let doc = json_arg(self, a)?;
                json_to_claim_value(doc)
            }
            Function::IsSubsetOf => {
                let sub = set_arg(a);
                let sup = set_arg(b);
                let ok = sub.iter().all(|x| sup.iter().any(|y| x.policy_eq(y)));
                Ok(Val::owned(ClaimValue::Boolean(ok)))
            }
            Function::AppendString => {
                let mut s = string_arg(self, a)?.into_owned();
                let t = string_arg(self, b)?;
                if s.len() + t.len() > limits::MAX_STRING_VALUE_BYTES {
                    return Err(EvalError::Function { function: self.name(), message: "result is too long".into() });
                }
                s.push_str(&t);
                Ok(Val::owned(ClaimValue::String(s)))
            }
            Function::NegateBool => match a {
                Some(Val::One(v)) => match v.as_ref() {
                    ClaimValue::Boolean(b) => Ok(Val::owned(ClaimValue::Boolean(!b))),
                    ClaimValue::Json(serde_json::Value::Bool(b)) => Ok(Val::owned(ClaimValue::Boolean(!b))),
                    other => Err(type_error(self, "a Boolean", other.value_type())),
                },
                _ => Err(type_error(self, "a Boolean", "a set")),
            },
            Function::ContainsOnlyValue => {
                let set = set_arg(a);
                let v = match b {
                    Some(Val::One(v)) => v,
                    _ => return Err(type_error(self, "a single value", "a set")),
                };
                let ok = !set.is_empty() && set.iter().all(|x| x.policy_eq(&v));
                Ok(Val::owned(ClaimValue::Boolean(ok)))
            }
        }
    }
}

/// Compile a JmesPath query with bounded length and nesting (the `jmespath`
/// parser is recursive; unbounded input could exhaust the stack).
pub fn compile_query(query: &str) -> Result<jmespath::Expression<'static>, EvalError> {
    let bad = |message: String| EvalError::Function { function: "JmesPath", message };
    if query.is_empty() {
        return Err(bad("the query is empty".into()));
    }
    if query.len() > limits::MAX_JMESPATH_QUERY_BYTES {
        return Err(bad(format!("the query is longer than {} bytes", limits::MAX_JMESPATH_QUERY_BYTES)));
    }
    let mut depth = 0usize;
    for b in query.bytes() {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > limits::MAX_NESTING {
                    return Err(bad(format!("the query nests deeper than {}", limits::MAX_NESTING)));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    jmespath::compile(query).map_err(|e| bad(format!("invalid query: {e}")))
}

fn search(expr: &jmespath::Expression<'static>, doc: &serde_json::Value) -> Result<serde_json::Value, EvalError> {
    let bad = |message: String| EvalError::Function { function: "JmesPath", message };
    let result = expr.search(doc).map_err(|e| bad(format!("query failed: {e}")))?;
    serde_json::to_value(&*result).map_err(|e| bad(format!("result is not JSON: {e}")))
}

fn type_error(f: &Function, expected: &str, got: &str) -> EvalError {
    EvalError::Function { function: f.name(), message: format!("expected {expected}, got {got}") }
}

fn set_arg(v: Option<Val<'_>>) -> Vec<ClaimValue> {
    v.map(Val::into_set).unwrap_or_default()
}

fn string_arg<'a>(f: &Function, v: Option<Val<'a>>) -> Result<Cow<'a, str>, EvalError> {
    match v {
        Some(Val::One(Cow::Borrowed(ClaimValue::String(s)))) => Ok(Cow::Borrowed(s.as_str())),
        Some(Val::One(Cow::Owned(ClaimValue::String(s)))) => Ok(Cow::Owned(s)),
        Some(Val::One(v)) => match v.as_ref() {
            ClaimValue::Json(serde_json::Value::String(s)) => Ok(Cow::Owned(s.clone())),
            other => Err(type_error(f, "a String", other.value_type())),
        },
        _ => Err(type_error(f, "a String", "a set")),
    }
}

/// A JSON argument: a JSON claim value, or a string holding JSON text.
fn json_arg<'a>(f: &Function, v: Option<Val<'a>>) -> Result<Cow<'a, serde_json::Value>, EvalError> {
    match v {
        Some(Val::One(Cow::Borrowed(ClaimValue::Json(j)))) => Ok(Cow::Borrowed(j)),
        Some(Val::One(Cow::Owned(ClaimValue::Json(j)))) => Ok(Cow::Owned(j)),
        Some(Val::One(v)) => match v.as_ref() {
            ClaimValue::String(s) => {
                if s.is_empty() {
                    return Err(type_error(f, "non-empty JSON text", "an empty string"));
                }
                if s.len() > limits::MAX_JSON_ARGUMENT_BYTES {
                    return Err(EvalError::Function {
                        function: f.name(),
                        message: "JSON argument is too large".into(),
                    });
                }
                // serde_json bounds its own recursion (128 levels).
                serde_json::from_str(s).map(Cow::Owned).map_err(|e| EvalError::Function {
                    function: f.name(),
                    message: format!("argument is not valid JSON: {e}"),
                })
            }
            other => Err(type_error(f, "JSON text", other.value_type())),
        },
        _ => Err(type_error(f, "JSON text", "a set")),
    }
}

fn json_to_claim_value(doc: Cow<'_, serde_json::Value>) -> Result<Val<'static>, EvalError> {
    let bad = |message: &str| EvalError::Function { function: "JsonToClaimValue", message: message.into() };
    let scalar = |v: &serde_json::Value| -> Result<Option<ClaimValue>, EvalError> {
        Ok(Some(match v {
            serde_json::Value::Null => return Ok(None),
            serde_json::Value::Bool(b) => ClaimValue::Boolean(*b),
            serde_json::Value::String(s) => ClaimValue::String(s.clone()),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => ClaimValue::Integer(i),
                None => return Err(bad("numbers must be integers")),
            },
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                return Err(bad("only JSON arrays of primitive values are supported"))
            }
        }))
    };
    match doc.as_ref() {
        serde_json::Value::Object(_) => Err(bad("JSON objects are not supported")),
        serde_json::Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                if let Some(v) = scalar(item)? {
                    out.push(v);
                }
            }
            Ok(Val::Set(out))
        }
        other => Ok(match scalar(other)? {
            Some(v) => Val::owned(v),
            None => Val::Set(Vec::new()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Val<'static> {
        Val::owned(ClaimValue::from(x))
    }

    fn one(v: Val<'_>) -> ClaimValue {
        match v {
            Val::One(v) => v.into_owned(),
            Val::Set(s) => panic!("expected one value, got {s:?}"),
        }
    }

    #[test]
    fn jmespath_literal_and_dynamic() {
        let f = Function::JmesPath { compiled: None };
        let r = f.call(vec![s("{\"foo\": \"bar\"}"), s("foo")]).unwrap();
        assert!(one(r).policy_eq(&ClaimValue::from("bar")));
        let r = f.call(vec![s("{\"values\": [0,1,2,3,4]}"), s("values[2]")]).unwrap();
        assert!(one(r).policy_eq(&ClaimValue::from("2")));
    }

    #[test]
    fn jmespath_rejects_bad_input() {
        let f = Function::JmesPath { compiled: None };
        assert!(f.call(vec![s("not json"), s("a")]).is_err());
        assert!(f.call(vec![s("{}"), s("")]).is_err());
        let deep = "[".repeat(1000);
        assert!(f.call(vec![s("{}"), s(&deep)]).is_err());
    }

    #[test]
    fn json_to_claim_value_cases() {
        let f = Function::JsonToClaimValue;
        assert_eq!(one(f.call(vec![s("100")]).unwrap()), ClaimValue::Integer(100));
        assert_eq!(one(f.call(vec![s("true")]).unwrap()), ClaimValue::Boolean(true));
        assert_eq!(one(f.call(vec![s("\"abc\"")]).unwrap()), ClaimValue::from("abc"));
        match f.call(vec![s("[0, \"abc\", true]")]).unwrap() {
            Val::Set(v) => {
                assert_eq!(v, vec![ClaimValue::Integer(0), ClaimValue::from("abc"), ClaimValue::Boolean(true)])
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(f.call(vec![s("null")]).unwrap(), Val::Set(v) if v.is_empty()));
        assert!(f.call(vec![s("{\"a\":1}")]).is_err());
        assert!(f.call(vec![s("1.5")]).is_err());
        assert!(f.call(vec![s("[[1]]")]).is_err());
    }

    #[test]
    fn set_functions() {
        let sub = Val::Set(vec![ClaimValue::from("abc"), ClaimValue::Integer(100)]);
        let sup = Val::Set(vec![ClaimValue::Boolean(true), ClaimValue::from("abc"), ClaimValue::Integer(100)]);
        let r = Function::IsSubsetOf.call(vec![sub.clone(), sup.clone()]).unwrap();
        assert_eq!(one(r), ClaimValue::Boolean(true));
        let r = Function::IsSubsetOf.call(vec![sup, sub]).unwrap();
        assert_eq!(one(r), ClaimValue::Boolean(false));
        let set = Val::Set(vec![ClaimValue::Integer(100), ClaimValue::Integer(101)]);
        let r = Function::ContainsOnlyValue.call(vec![set, Val::owned(ClaimValue::Integer(100))]).unwrap();
        assert_eq!(one(r), ClaimValue::Boolean(false));
        let r = Function::ContainsOnlyValue.call(vec![Val::Set(vec![]), Val::owned(ClaimValue::Integer(100))]).unwrap();
        assert_eq!(one(r), ClaimValue::Boolean(false));
    }

    #[test]
    fn string_and_bool() {
        let r = Function::AppendString.call(vec![s("abc"), s("xyz")]).unwrap();
        assert_eq!(one(r), ClaimValue::from("abcxyz"));
        let r = Function::NegateBool.call(vec![Val::owned(ClaimValue::Boolean(true))]).unwrap();
        assert_eq!(one(r), ClaimValue::Boolean(false));
        assert!(Function::NegateBool.call(vec![s("x")]).is_err());
        assert!(Function::AppendString.call(vec![s("a"), Val::owned(ClaimValue::Integer(1))]).is_err());
    }
}
