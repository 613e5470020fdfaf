//! `TdxVm`: DCAP quote v4 / v5 → MAA's TDX EAT-profile claims (`tdx_*`).
//!
//! Quote, PCK chain, QE, TCB and TDX module checks are in [`super::dcap`].
//! Bytes after the signature data are ignored (real quotes are padded). TD
//! attributes are reported, not judged: MAA leaves `SEPT_VE_DISABLE` and the
//! like to policy; only `allow_debug = false` rejects a debug TD here.

use serde_json::json;

use super::binding::{bind_init_time_data, bind_runtime_data};
use super::dcap;
use super::error::{EvidenceError, Result};
use super::{
    put_data_claims, AttestationType, Claims, CollateralStore, EvidenceRequest, EvidenceVerifier, VerificationTime,
    VerifiedEvidence,
};

/// Verifier for `TdxVm`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TdxVerifier;

impl EvidenceVerifier for TdxVerifier {
    fn attestation_type(&self) -> AttestationType {
        AttestationType::TdxVm
    }

    fn verify(&self, req: &EvidenceRequest, store: &CollateralStore, at: VerificationTime) -> Result<VerifiedEvidence> {
        let vq = dcap::verify_quote(&req.evidence, store, at.unix())?;
        let td = *vq
            .quote
            .report
            .as_td10()
            .ok_or(EvidenceError::Unsupported { what: "quote body for TdxVm", value: "SGX enclave report".into() })?;
        let debug = td.td_attributes[0] & 0x01 != 0;
        if debug && !req.options.allow_debug {
            return Err(EvidenceError::DebugNotAllowed { what: "TD" });
        }
        let h = |b: &[u8]| hex::encode(b);
        let a = td.td_attributes;
        let mut c = Claims::new();
        c.insert("x-ms-attestation-type".into(), "tdxvm".into());
        c.insert("eat_profile".into(), "https://aka.ms/maa-eat-profile-tdxvm".into());
        c.insert("dbgstat".into(), if debug { "enabled" } else { "disabled" }.into());
        c.insert("intuse".into(), "generic".into());
        c.insert("attester_tcb_status".into(), vq.tcb_status.to_string().into());
        c.insert("attester_advisory_ids".into(), json!(vq.advisory_ids));
        c.insert("tdx_mrsignerseam".into(), h(&td.mr_signer_seam).into());
        c.insert("tdx_mrseam".into(), h(&td.mr_seam).into());
        c.insert("tdx_mrtd".into(), h(&td.mr_td).into());
        c.insert("tdx_rtmr0".into(), h(&td.rt_mr0).into());
        c.insert("tdx_rtmr1".into(), h(&td.rt_mr1).into());
        c.insert("tdx_rtmr2".into(), h(&td.rt_mr2).into());
        c.insert("tdx_rtmr3".into(), h(&td.rt_mr3).into());
        c.insert("tdx_mrconfigid".into(), h(&td.mr_config_id).into());
        c.insert("tdx_mrowner".into(), h(&td.mr_owner).into());
        c.insert("tdx_mrownerconfig".into(), h(&td.mr_owner_config).into());
        c.insert("tdx_report_data".into(), h(&td.report_data).into());
        c.insert("tdx_seam_attributes".into(), h(&td.seam_attributes).into());
        c.insert("tdx_tee_tcb_svn".into(), h(&td.tee_tcb_svn).into());
        c.insert("tdx_xfam".into(), h(&td.xfam).into());
        c.insert("tdx_seamsvn".into(), u16::from_le_bytes([td.tee_tcb_svn[0], td.tee_tcb_svn[1]]).into());
        c.insert("tdx_td_attributes".into(), h(&a).into());
        c.insert("tdx_td_attributes_debug".into(), debug.into());
        c.insert("tdx_td_attributes_septve_disable".into(), (a[3] & 0x10 != 0).into());
        c.insert("tdx_td_attributes_protection_keys".into(), (a[3] & 0x40 != 0).into());
        c.insert("tdx_td_attributes_key_locker".into(), (a[3] & 0x80 != 0).into());
        c.insert("tdx_td_attributes_perfmon".into(), (a[7] & 0x80 != 0).into());
        c.insert("tdx_quote_version".into(), vq.quote.header.version.into());
        c.insert("tdx_fmspc".into(), hex::encode_upper(vq.fmspc).into());
        c.insert("tdx_platform_tcb_status".into(), vq.platform_status.to_string().into());
        if let Some(id) = &vq.tdx_module_id {
            c.insert("tdx_module_id".into(), id.clone().into());
        }
        if let Some(s) = vq.tdx_module_status {
            c.insert("tdx_module_tcb_status".into(), s.to_string().into());
        }
        if let Some(td15) = vq.quote.report.as_td15() {
            c.insert("tdx_tee_tcb_svn2".into(), h(&td15.tee_tcb_svn2).into());
            c.insert("tdx_mrservicetd".into(), h(&td15.mr_service_td).into());
        }
        c.insert("x-ms-sgx-collateral".into(), super::sgx::collateral_claim(&vq, &req.evidence, store, at));
        let runtime = match &req.runtime_data {
            Some(rd) => bind_runtime_data(rd, &td.report_data)?,
            None => None,
        };
        let init = match &req.init_time_data {
            // MRCONFIGID is the TDX analogue of the SGX CONFIGID.
            Some(itd) => bind_init_time_data(itd, "TDX MRCONFIGID", &td.mr_config_id)?,
            None => None,
        };
        put_data_claims(&mut c, runtime, init);
        Ok(VerifiedEvidence {
            attestation_type: AttestationType::TdxVm,
            claims: c,
            tcb_status: Some(vq.tcb_status.to_string()),
            advisory_ids: vq.advisory_ids,
            is_debuggable: debug,
        })
    }
}
