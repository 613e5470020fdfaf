//! Decoding a [`Command`] without buffering it: the `op` tag is read first.
//!
//! Why: serde's derived decoder for an internally tagged enum cannot know
//! where the tag is, so it first copies every field of the object into its
//! private `Content` tree and decodes the variant from that copy; a batch
//! entry is copied again at each level of nesting (the batch, each
//! member's command, each `meta` value). Every follower decodes every entry
//! it receives: ~6 % of a loaded cluster's CPU went to decoding requests,
//! ~5 % with the tag read first (BENCHMARKS.md, session 17; the rest is
//! the strings and values themselves). Our encoder (serde's derived `Serialize`)
//! always writes `op` first, so here the common case streams straight into
//! the variant's fields. An object whose `op` comes later (hand-written
//! JSON) is still accepted: it is buffered as a JSON value first, like
//! before. The wire and log format is unchanged.
//!
//! The variants' fields are decoded by `CommandFields`, serde's externally
//! tagged twin of `Command`, generated from the same list by `commands!`
//! in `command.rs`; the tests check that every variant decodes.

use std::borrow::Cow;
use std::fmt;

use serde::de::value::{CowStrDeserializer, MapDeserializer};
use serde::de::{self, DeserializeSeed, EnumAccess, IgnoredAny, IntoDeserializer, MapAccess, VariantAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::{Command, CommandFields};

/// The tag's key, as written by `#[serde(tag = "op")]` on [`Command`].
const TAG: &str = "op";

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(CommandVisitor)
    }
}

struct CommandVisitor;

impl<'de> Visitor<'de> for CommandVisitor {
    type Value = Command;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a command: an object with an \"op\" tag")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Command, A::Error> {
        match map.next_key::<Str<'de>>()? {
            None => Err(de::Error::missing_field(TAG)),
            Some(Str(key)) if key == TAG => {
                let tag = map.next_value::<Str<'de>>()?.0;
                CommandFields::deserialize(Tagged { tag, rest: map })
            }
            Some(Str(first)) => buffered(first.into_owned(), map),
        }
    }
}

/// The slow path: `op` is not the first key, so the object is collected
/// as a JSON value and decoded from that.
fn buffered<'de, A: MapAccess<'de>>(first: String, mut map: A) -> Result<Command, A::Error> {
    let mut object = serde_json::Map::new();
    let value = map.next_value::<serde_json::Value>()?;
    object.insert(first, value);
    while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
        if object.insert(k, v).is_some() {
            return Err(de::Error::custom("duplicate key in a command"));
        }
    }
    let tag = match object.remove(TAG) {
        Some(serde_json::Value::String(s)) => s,
        Some(_) => return Err(de::Error::custom("a command's \"op\" must be a string")),
        None => return Err(de::Error::missing_field(TAG)),
    };
    let rest = MapDeserializer::<_, serde_json::Error>::new(object.into_iter());
    CommandFields::deserialize(Tagged { tag: Cow::Owned(tag), rest }).map_err(de::Error::custom)
}

/// A key or the tag: borrowed from the input where the format allows it.
struct Str<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// An internally tagged object, tag already read, presented to
/// [`CommandFields`] as the externally tagged enum it expects: the variant
/// is the tag, its fields are the rest of the object.
struct Tagged<'de, M> {
    tag: Cow<'de, str>,
    rest: M,
}

impl<'de, M: MapAccess<'de>> Deserializer<'de> for Tagged<'de, M> {
    type Error = M::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, M::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de, M: MapAccess<'de>> EnumAccess<'de> for Tagged<'de, M> {
    type Error = M::Error;
    type Variant = Fields<M>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Fields<M>), M::Error> {
        let tag: CowStrDeserializer<'de, M::Error> = self.tag.into_deserializer();
        Ok((seed.deserialize(tag)?, Fields(self.rest)))
    }
}

/// The rest of a tagged object: the variant's fields.
struct Fields<M>(M);

impl<'de, M: MapAccess<'de>> VariantAccess<'de> for Fields<M> {
    type Error = M::Error;

    /// A unit variant (`noop`) ignores any other keys, as serde's derived
    /// decoder does.
    fn unit_variant(mut self) -> Result<(), M::Error> {
        while self.0.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, M::Error> {
        Err(de::Error::invalid_type(de::Unexpected::Map, &"a struct or unit variant"))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, M::Error> {
        Err(de::Error::invalid_type(de::Unexpected::Map, &"a struct or unit variant"))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, M::Error> {
        visitor.visit_map(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{ReplicationMode, Request, TrustModel};
    use serde_json::json;

    fn request(command: Command) -> Request {
        Request { request_id: "r".into(), actor: "a".into(), proposed_at_ms: 1, command }
    }

    /// One command of every variant. The `match` makes a new variant a
    /// compile error here until it is added to the list.
    fn every_variant() -> Vec<Command> {
        let all = vec![
            Command::SetTopology { primary: "a".into(), secondary: Some("b".into()) },
            Command::CreateProvider {
                name: "p".into(),
                trust_model: TrustModel::Isolated,
                token_alg: "ES256".into(),
                signer_certs: vec!["pem".into()],
                shared: false,
                location: "a".into(),
                attest_requires_auth: true,
            },
            Command::DeleteProvider { name: "p".into() },
            Command::SetPolicy {
                provider: "p".into(),
                attestation_type: "SgxEnclave".into(),
                document: "version=1.0; // \"q\" \\ ü\n".into(),
                meta: json!({"jws": "a.b.", "n": [1, 2.5, null, {"x": true}]}),
            },
            Command::ResetPolicy { provider: "p".into(), attestation_type: "Tpm".into() },
            Command::AddSigner { provider: "p".into(), thumbprint: "t".into(), cert_pem: "c".into() },
            Command::RemoveSigner { provider: "p".into(), thumbprint: "t".into() },
            Command::RegisterNodeCert { node_id: 3, kid: "k".into(), cert_pem: "c".into(), retired_at: Some(9) },
            Command::RemoveNodeCert { kid: "k".into() },
            Command::PutCollateral { key: "k".into(), blob_b64: "QQ==".into() },
            Command::DeleteCollateral { key: "k".into() },
            Command::SetReplicationMode { mode: ReplicationMode::SyncRecover, reason: "r".into() },
            Command::Promoted {
                epoch: 2,
                primary: "b".into(),
                secondary: None,
                base_term: 4,
                base_index: 5,
                rpo: "0".into(),
                detail: json!({"d": 1}),
            },
            Command::Rebalanced { primary: "a".into(), secondary: Some("b".into()), detail: json!([]) },
            Command::Audit { action: "reseed".into(), epoch: 1, rpo: None, detail: json!(null) },
            Command::Noop,
            Command::Batch {
                requests: vec![
                    request(Command::Noop),
                    request(Command::DeleteCollateral { key: "k".into() }),
                    request(Command::Batch { requests: vec![request(Command::Noop)] }),
                ],
            },
        ];
        for c in &all {
            match c {
                Command::SetTopology { .. }
                | Command::CreateProvider { .. }
                | Command::DeleteProvider { .. }
                | Command::SetPolicy { .. }
                | Command::ResetPolicy { .. }
                | Command::AddSigner { .. }
                | Command::RemoveSigner { .. }
                | Command::RegisterNodeCert { .. }
                | Command::RemoveNodeCert { .. }
                | Command::PutCollateral { .. }
                | Command::DeleteCollateral { .. }
                | Command::SetReplicationMode { .. }
                | Command::Promoted { .. }
                | Command::Rebalanced { .. }
                | Command::Audit { .. }
                | Command::Noop
                | Command::Batch { .. } => {}
            }
        }
        all
    }

    #[test]
    fn every_variant_decodes_from_its_encoding() {
        let all = every_variant();
        let kinds: std::collections::BTreeSet<_> = all.iter().map(Command::kind).collect();
        assert_eq!(kinds.len(), all.len(), "one sample per variant");
        for c in all {
            let bytes = serde_json::to_vec(&c).unwrap();
            assert!(
                bytes.starts_with(b"{\"op\":"),
                "the encoder writes the tag first: {}",
                String::from_utf8_lossy(&bytes)
            );
            assert_eq!(serde_json::from_slice::<Command>(&bytes).unwrap(), c, "from bytes");
            assert_eq!(
                serde_json::from_reader::<_, Command>(&bytes[..]).unwrap(),
                c,
                "from a reader (nothing borrowed)"
            );
            assert_eq!(
                serde_json::from_value::<Command>(serde_json::to_value(&c).unwrap()).unwrap(),
                c,
                "from a value"
            );
        }
    }

    #[test]
    fn the_tag_may_come_later_and_defaults_still_apply() {
        let late = r#"{"name":"p","trust_model":"AAD","token_alg":"RS256","signer_certs":[],"shared":true,"op":"create_provider"}"#;
        let want = Command::CreateProvider {
            name: "p".into(),
            trust_model: TrustModel::Aad,
            token_alg: "RS256".into(),
            signer_certs: vec![],
            shared: true,
            location: String::new(),
            attest_requires_auth: false,
        };
        assert_eq!(serde_json::from_str::<Command>(late).unwrap(), want);
        let first = r#"{"op":"create_provider","name":"p","trust_model":"AAD","token_alg":"RS256","signer_certs":[],"shared":true}"#;
        assert_eq!(serde_json::from_str::<Command>(first).unwrap(), want);
        // Unknown fields are ignored on both paths, as before.
        assert_eq!(serde_json::from_str::<Command>(r#"{"op":"noop","x":[1,{"y":2}]}"#).unwrap(), Command::Noop);
        assert_eq!(serde_json::from_str::<Command>(r#"{"x":1,"op":"noop"}"#).unwrap(), Command::Noop);
    }

    #[test]
    fn malformed_commands_are_refused() {
        for bad in [
            r#"{}"#,
            r#"{"op":"no_such_op"}"#,
            r#"{"op":7}"#,
            r#"{"x":1}"#,
            r#"{"x":1,"op":7}"#,
            r#"{"x":1,"x":2,"op":"noop"}"#,
            r#"{"op":"delete_provider"}"#,
            r#"{"op":"delete_provider","name":5}"#,
            r#"{"op":"set_policy","provider":"p","attestation_type":"t","document":"d"}"#,
            r#"{"op":"noop""#,
            r#""noop""#,
            r#"["op","noop"]"#,
            r#"{"op":"batch","requests":[{"request_id":"r","actor":"a","proposed_at_ms":1,"command":{"op":"nope"}}]}"#,
        ] {
            assert!(serde_json::from_str::<Command>(bad).is_err(), "accepted {bad}");
        }
    }
}
