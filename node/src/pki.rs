//! Development PKI: a cluster CA and one certificate per node, generated
//! by `attestd dev-pki` for local and test clusters.
//!
//! Each node certificate is used three ways: HTTPS server identity for the
//! API, server identity for peer gRPC, and client identity for mutual TLS
//! to peers. It therefore carries both server and client EKUs, the fixed
//! peer SAN (`attest_raft::tls::PEER_SERVER_NAME`) and the host names and
//! addresses clients dial. Production deployments bring their own CA.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    let err = |source| PkiError::Write { path: path.display().to_string(), source };
    std::fs::write(path, contents).map_err(err)?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(())
}

/// Creates `dir/ca.pem` + `dir/ca.key` unless they exist, then
/// `dir/<name>.pem` + `dir/<name>.key` for each node name, with `sans`
/// (DNS names or IP addresses) added to every node certificate.
pub fn generate(dir: &Path, names: &[String], sans: &[String]) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Write { path: dir.display().to_string(), source })?;
    let ca_cert_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    let (ca_params, ca_key) = if ca_cert_path.exists() && ca_key_path.exists() {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| PkiError::Read { path: p.display().to_string(), source })
        };
        let key = KeyPair::from_pem(&read(&ca_key_path)?)?;
        (ca_params(), key)
    } else {
        let key = KeyPair::generate()?;
        let params = ca_params();
        let cert = params.self_signed(&key)?;
        write(&ca_cert_path, &cert.pem(), false)?;
        write(&ca_key_path, &key.serialize_pem(), true)?;
        (params, key)
    };
    // An existing CA is reloaded from its key alone: the issuer name comes
    // from the same fixed parameters, so new leaves chain to the old cert.
    let issuer = Issuer::new(ca_params, ca_key);
    for name in names {
        let mut all = vec![name.clone(), attest_raft::tls::PEER_SERVER_NAME.to_string(), "localhost".to_string()];
        all.extend(sans.iter().cloned());
        let mut params = CertificateParams::default();
        params.subject_alt_names = all
            .iter()
            .map(|s| match s.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => s.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().expect("literal IP")));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name.clone());
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        write(&dir.join(format!("{name}.pem")), &cert.pem(), false)?;
        write(&dir.join(format!("{name}.key")), &key.serialize_pem(), true)?;
    }
    Ok(())
}

/// The names among `names` that have no certificate and key in `dir` yet.
pub fn missing(dir: &Path, names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| !(dir.join(format!("{n}.pem")).is_file() && dir.join(format!("{n}.key")).is_file()))
        .cloned()
        .collect()
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "attestd development CA");
    dn.push(DnType::OrganizationName, "attestd");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_existing_regenerates_only_missing_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = vec!["node-a1".to_string(), "node-b1".to_string()];
        generate(dir.path(), &names[..1], &[]).expect("first run");
        let before = std::fs::read(dir.path().join("node-a1.pem")).expect("cert");
        let todo = missing(dir.path(), &names);
        assert_eq!(todo, vec!["node-b1".to_string()]);
        generate(dir.path(), &todo, &[]).expect("second run");
        assert_eq!(std::fs::read(dir.path().join("node-a1.pem")).expect("cert"), before, "existing cert kept");
        assert!(missing(dir.path(), &names).is_empty());
    }
}
