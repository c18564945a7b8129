//! Manifests between owner and grantee. The owner answers a grantee's request with the
//! slide's signed manifest when the patient's identity may leave the trust for the grant's
//! purpose, and otherwise with a de-identified view made for the grant's project
//! ([`crate::deidentify`]), signed and bound to the granted slide; with either, its signed
//! consent statement, which also lists the owner's grants for the slide that hold. A node
//! holding an identified copy may relay the owner's manifest and statement while the owner
//! is down. The grantee checks everything against the owner's roster key and the grant
//! before it stores the slide, and ends the slide when the statement no longer lists the
//! grant it holds it under; a newer statement relayed by a copy replaces an older one.

use libp2p::PeerId;
use slidemesh_protocol::consent::{ConsentStatement, SignedConsentStatement};
use slidemesh_protocol::wire::{ControlRequest, ControlResponse, fresh_nonce, request_tag};
use slidemesh_protocol::{
    Action, DeidentifiedView, Grant, GrantId, SignedDeidentifiedView, SignedGrant, SignedManifest,
    SlideId,
};
use tracing::{info, warn};

use super::receipts::Asked;
use super::{Federation, PeerAnswers, Refusal};
use crate::access;
use crate::audit::Pending;
use crate::consent::ConsentAction;
use crate::deidentify::{Pseudonyms, deidentify};
use crate::ingest::assemble::summarise;
use crate::store::federation::{CopyKind, RemoteSlide};
use crate::store::{Origin, now_unix};

/// The project a grant's pseudonyms are made for: its reference (an ethics approval or
/// study number), or the grant itself when it names none, so that two grants without a
/// reference never share pseudonyms.
fn project_of(grant: &Grant, signed: &SignedGrant) -> String {
    grant
        .reference
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("grant {}", signed.id()))
}

/// How a manifest request is described in the server's audit entry (and so in its receipt,
/// which the requester checks against the same description).
fn manifest_label(from_copy: bool, refresh: bool, nonce: &[u8; 16]) -> String {
    let kind = match (from_copy, refresh) {
        (false, false) => "manifest",
        (false, true) => "manifest (refresh)",
        (true, false) => "manifest (copy)",
        (true, true) => "manifest (copy, refresh)",
    };
    format!("{kind}, request {}", request_tag(nonce))
}

impl PeerAnswers {
    /// A grantee asks for a slide's manifest.
    pub(super) fn answer_manifest(
        &self,
        peer: PeerId,
        slide: SlideId,
        signed_grant: SignedGrant,
        refresh: bool,
        nonce: [u8; 16],
    ) -> ControlResponse {
        // Not the owner: answer from a copy if one may be relayed, else NotFound before any
        // decision is made (and logged) about a manifest that would not be sent.
        let record = match self.holdings.store.slide(&slide) {
            Ok(Some(record)) => record,
            Ok(None) => {
                return self.answer_manifest_from_copy(peer, slide, signed_grant, refresh, nonce);
            }
            Err(e) => {
                return ControlResponse::Failed {
                    reason: e.to_string(),
                };
            }
        };
        // The owner's rules go with every manifest: a grantee holding a copy decides with
        // them. Without them this node answers nothing yet, rather than a manifest that
        // would replace the rules the grantee holds with none.
        let consent = match self.consent_statement(&slide) {
            Ok(statement) => Some(statement),
            Err(e) => {
                warn!(%peer, %slide, error = %e, "cannot state the slide's consent");
                return ControlResponse::Failed {
                    reason: format!("cannot state the slide's consent: {e}"),
                };
            }
        };
        // A grant that does not verify is refused by the decision.
        let action = signed_grant.verify().map_or(Action::View, |g| g.action);
        let mut decisions = match self.authorize(
            &peer,
            &slide,
            &signed_grant,
            None,
            &access::peer_manifest_actions(action),
            &manifest_label(false, refresh, &nonce),
        ) {
            Ok(decisions) => decisions,
            Err(reason) => {
                warn!(%peer, %slide, %reason, "manifest request not served");
                return reason.into();
            }
        };
        // `authorize` verified the grant; decoding it again cannot fail.
        let Ok(grant) = signed_grant.verify() else {
            return ControlResponse::Denied {
                reason: "grant does not verify".into(),
            };
        };
        let identity = match self.identity_may_leave(&peer, &slide, &signed_grant, &grant) {
            Ok(identity) => identity,
            Err(reason) => return ControlResponse::Failed { reason },
        };
        if let Some(identity) = identity {
            decisions.extend(identity);
            // Nothing leaves before its decisions are durable in the log.
            let Some(receipt) = self.sign_receipt(decisions) else {
                return audit_failed();
            };
            info!(%peer, %slide, "manifest sent");
            return ControlResponse::Manifest {
                manifest: record.signed,
                consent,
                receipt: Some(receipt),
            };
        }
        let project = project_of(&grant, &signed_grant);
        match self.deidentified_view(&record.signed, &slide, &project) {
            Ok((manifest, view)) => {
                let Some(receipt) = self.sign_receipt(decisions) else {
                    return audit_failed();
                };
                info!(%peer, %slide, view = %manifest.slide_id(), project, "de-identified manifest sent");
                ControlResponse::DeidentifiedManifest {
                    manifest,
                    view,
                    consent,
                    receipt: Some(receipt),
                }
            }
            Err(e) => {
                warn!(%peer, %slide, error = %e, "cannot make the de-identified view");
                ControlResponse::Failed {
                    reason: format!("cannot make the slide's de-identified view: {e:#}"),
                }
            }
        }
    }

    /// A node holding a copy answers for the owner (who may be down) only when it can do so
    /// faithfully: it holds the owner's identified manifest and consent statement, and the
    /// owner's rules let the requester see identity. A de-identified view can only be made
    /// by the owner, whose key the pseudonyms come from.
    fn answer_manifest_from_copy(
        &self,
        peer: PeerId,
        slide: SlideId,
        signed_grant: SignedGrant,
        refresh: bool,
        nonce: [u8; 16],
    ) -> ControlResponse {
        let remote = match self.holdings.store.served_copy(&slide) {
            Ok(Some(remote)) if remote.deidentified.is_none() && remote.consent.is_some() => remote,
            Ok(_) => return ControlResponse::NotFound,
            Err(e) => {
                return ControlResponse::Failed {
                    reason: e.to_string(),
                };
            }
        };
        let Ok(grant) = signed_grant.verify() else {
            return ControlResponse::Denied {
                reason: "grant does not verify".into(),
            };
        };
        if grant.purpose.requires_deidentification() {
            return ControlResponse::NotFound;
        }
        // The label's permission first: when identity may not go to this requester the copy
        // has nothing to relay, and no allowed view is logged for a manifest never sent.
        // A replica's decision (`replicate`) covers the identity it takes with the slide.
        let actions = match grant.action {
            Action::View => vec![ConsentAction::SeeLabel, ConsentAction::View],
            Action::Replicate => access::peer_manifest_actions(grant.action),
        };
        let decisions = match self.authorize(
            &peer,
            &slide,
            &signed_grant,
            None,
            &actions,
            &manifest_label(true, refresh, &nonce),
        ) {
            Ok(decisions) => decisions,
            Err(reason) => return reason.into(),
        };
        let Some(receipt) = self.sign_receipt(decisions) else {
            return audit_failed();
        };
        info!(%peer, %slide, "owner's manifest sent from this node's copy");
        ControlResponse::Manifest {
            manifest: remote.signed,
            consent: remote.consent,
            receipt: Some(receipt),
        }
    }

    /// This node's current rules for one of its slides, signed: its policy's text, the
    /// slide's recorded consent and the grants for it that hold now.
    fn consent_statement(&self, slide: &SlideId) -> Result<SignedConsentStatement, String> {
        let served = self.holdings.served_slide(slide)?;
        let consent = self
            .holdings
            .store
            .slide_consent(slide, &served.series_uid)
            .map_err(|e| format!("cannot read the slide's consent: {e}"))?;
        let now = now_unix();
        let statement = ConsentStatement {
            owner: self.holdings.trust.clone(),
            slide: *slide,
            policy: self.holdings.policy.current().text().to_string(),
            consent,
            issued_at: now,
            valid_grants: self.valid_grants_for(slide, now)?,
        };
        Ok(SignedConsentStatement::sign(&statement, &self.holdings.key))
    }

    /// The grants this node issued for one of its slides that hold at `now`: unexpired and
    /// not revoked by this node (their issuer). Sorted.
    fn valid_grants_for(&self, slide: &SlideId, now: u64) -> Result<Vec<GrantId>, String> {
        let roster = self.holdings.membership.roster();
        let failed = |e: crate::store::StoreError| format!("cannot list the slide's grants: {e}");
        let mut out = Vec::new();
        for stored in self.holdings.store.grants().map_err(failed)? {
            if !stored.issued_here || stored.grant.slide != *slide || stored.grant.expires_at <= now
            {
                continue;
            }
            let id = stored.signed.id();
            let revocations = self.holdings.store.revocations(&id).map_err(failed)?;
            let revoked = match &roster {
                Some(roster) => {
                    access::grant::revoked_by_issuer(&id, &stored.grant, &revocations, roster)
                }
                // No roster, so no grant holds anywhere; list none that was revoked.
                None => !revocations.is_empty(),
            };
            if !revoked {
                out.push(id);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Whether the slide's identifying metadata may go to the grantee: never for research
    /// or education, whatever the policy says; otherwise when the owner's policy lets the
    /// grantee see the label (the same identity, printed on the glass). The policy's
    /// decision is audited like any other; `Some` carries it for the receipt. `Err`: this
    /// node could not decide (its store failed).
    fn identity_may_leave(
        &self,
        peer: &PeerId,
        slide: &SlideId,
        signed_grant: &SignedGrant,
        grant: &Grant,
    ) -> Result<Option<Vec<Pending>>, String> {
        if grant.purpose.requires_deidentification() {
            return Ok(None);
        }
        // A replica takes the identified slide whole: deciding `replicate` decided that.
        if grant.action == Action::Replicate {
            return Ok(Some(Vec::new()));
        }
        match self.authorize(
            peer,
            slide,
            signed_grant,
            None,
            &[ConsentAction::SeeLabel],
            "identified metadata",
        ) {
            Ok(decisions) => Ok(Some(decisions)),
            Err(Refusal::Denied(_)) => Ok(None),
            // Undecided is not "identity may not leave": a de-identified view now would
            // replace the grantee's identified copy.
            Err(Refusal::Failed(reason)) => Err(reason),
        }
    }

    /// The slide's de-identified view for `project`, and the owner's statement binding it
    /// to the slide. Deterministic: the same project always gets the same view.
    fn deidentified_view(
        &self,
        signed: &SignedManifest,
        slide: &SlideId,
        project: &str,
    ) -> anyhow::Result<(SignedManifest, SignedDeidentifiedView)> {
        let manifest = signed.verify()?;
        let view = deidentify(
            &manifest,
            &Pseudonyms::for_project(&self.holdings.key, project),
        )?;
        let view = SignedManifest::sign(&view, &self.holdings.key);
        let statement = DeidentifiedView {
            original: *slide,
            view: view.slide_id(),
            project: project.to_string(),
        };
        let statement = SignedDeidentifiedView::sign(&statement, &self.holdings.key);
        Ok((view, statement))
    }
}

impl Federation {
    /// The owner refused this node the slide (its consent or policy changed, or it no
    /// longer holds it): the slide ends here, as the owner's current rules say, for this
    /// trust's people and for any trust its copy would serve. Its cached tiles go too.
    /// The grant is kept: the owner is asked again, rarely ([`OwnerRefused`]), in case it
    /// lets the slide be shown again.
    async fn end_shared_slide(&self, slide: &SlideId, grant: &Grant, id: GrantId, reason: &str) {
        let kind = CopyKind::of(grant.action);
        let fed_store = self.holdings.store.clone();
        let slide = *slide;
        // Only a refusal under the grant the slide is kept under says anything about it.
        let ended = tokio::task::spawn_blocking(move || {
            let ended = fed_store.end_copy(kind, &slide, &id)?;
            let still_shared = fed_store.remote_slide(&slide)?.is_some();
            Ok::<_, crate::store::StoreError>((ended, still_shared))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        match ended {
            Ok((Some(remote), still_shared)) => {
                self.holdings.manifest_changed(&slide);
                self.forget_owners_rules(&slide);
                let tiles: Vec<_> = remote
                    .signed
                    .verify()
                    .map(|m| m.all_tiles().copied().collect())
                    .unwrap_or_default();
                let cache = self.holdings.clone();
                // A shared slide's tiles go unless a replica held here pins them; a
                // replica's go unless the slide is still shared with this trust's people.
                let purged = tokio::task::spawn_blocking(move || match kind {
                    CopyKind::Shared => cache.cache.drop_unpinned(&tiles),
                    CopyKind::Replica => cache.cache.unpin_slide(&slide, still_shared).map(drop),
                })
                .await;
                if !matches!(purged, Ok(Ok(()))) {
                    warn!(%slide, "cannot drop the ended slide's cached tiles; they are unreachable and age out");
                }
                warn!(%slide, reason, "the owner refused this node the slide; it is no longer shown or served here, cache included");
            }
            Ok((None, _)) => {}
            Err(error) => warn!(%slide, error, "cannot end a slide the owner refused"),
        }
    }

    /// Fetches, verifies and stores the manifest a received grant covers.
    /// `refresh`: this node holds the manifest already and asks for the owner's current
    /// rules (audited as such on both sides).
    pub async fn fetch_manifest(&self, signed: &SignedGrant, refresh: bool) -> anyhow::Result<()> {
        let grant = signed.verify()?;
        // A replica is kept apart from the slides shared with this trust's people.
        let kind = CopyKind::of(grant.action);
        let network = &self.network;
        let owner = self
            .holdings
            .membership
            .peer_of(&grant.owner)
            .ok_or_else(|| anyhow::anyhow!("owner {} is not on the roster", grant.owner))?;
        let nonce = fresh_nonce();
        let request = ControlRequest::Manifest {
            slide: grant.slide,
            grant: signed.clone(),
            refresh,
            nonce,
        };
        // The owner first; when it cannot be reached, any member holding a copy (found
        // through the DHT) may relay the owner's signed manifest and consent statement.
        let (source, response) = match network.request(owner, request.clone()).await {
            Ok(answer) => (owner, answer),
            Err(unreachable) => {
                let holders = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    network.providers(grant.slide, [owner].into_iter().collect()),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
                let mut answered = None;
                for holder in holders
                    .into_iter()
                    .filter(|p| *p != network.local_peer_id())
                {
                    if let Ok(answer @ ControlResponse::Manifest { .. }) =
                        network.request(holder, request.clone()).await
                    {
                        answered = Some((holder, answer));
                        break;
                    }
                }
                answered.ok_or(unreachable)?
            }
        };
        let owner_key = self.holdings.membership.node_key_of(&grant.owner);
        let (manifest_signed, deidentified, consent, receipt) = match response {
            ControlResponse::Manifest {
                manifest: m,
                consent,
                receipt,
            } => {
                if m.slide_id() != grant.slide {
                    anyhow::bail!("owner sent a manifest for another slide");
                }
                if grant.purpose.requires_deidentification() {
                    anyhow::bail!(
                        "owner sent identified metadata for a {} grant; refusing to keep it",
                        grant.purpose
                    );
                }
                (m, None, consent, receipt)
            }
            ControlResponse::DeidentifiedManifest {
                manifest,
                view,
                consent,
                receipt,
            } => {
                let statement = view.verify()?;
                if Some(view.signer) != owner_key {
                    anyhow::bail!("de-identified view not signed by the owner's roster key");
                }
                if statement.original != grant.slide || statement.view != manifest.slide_id() {
                    anyhow::bail!("owner sent a de-identified view of another slide");
                }
                (manifest, Some(view), consent, receipt)
            }
            ControlResponse::Denied { reason } => {
                self.end_shared_slide(&grant.slide, &grant, signed.id(), &reason)
                    .await;
                return Err(OwnerRefused(format!("owner refused: {reason}")).into());
            }
            ControlResponse::NotFound => {
                self.end_shared_slide(&grant.slide, &grant, signed.id(), "owner has no such slide")
                    .await;
                return Err(OwnerRefused("owner has no such slide".into()).into());
            }
            other => anyhow::bail!("unexpected answer {other:?}"),
        };
        let manifest = manifest_signed.verify()?;
        if Some(manifest_signed.signer) != owner_key || manifest.owner != grant.owner {
            anyhow::bail!("manifest not signed by the owner's roster key");
        }
        let mut stated_at = None;
        if let Some(statement) = &consent {
            let stated = statement.verify()?;
            if Some(statement.signer) != owner_key
                || stated.owner != grant.owner
                || stated.slide != grant.slide
            {
                anyhow::bail!("consent statement not the owner's for this slide");
            }
            // Its policy is parsed whenever this node decides for the slide: text built to
            // exhaust the parser is not kept.
            crate::consent::check_shape(&stated.policy)
                .map_err(|e| anyhow::anyhow!("the owner's policy for {}: {e}", grant.slide))?;
            // The owner's word that this grant no longer holds, whoever relayed it: the
            // slide ends here as if the owner had refused it, revocation received or not.
            if !stated.lists(&signed.id()) {
                let reason = format!(
                    "the owner's consent statement no longer lists grant {}",
                    signed.id()
                );
                self.end_shared_slide(&grant.slide, &grant, signed.id(), &reason)
                    .await;
                return Err(OwnerRefused(reason).into());
            }
            stated_at = Some(stated.issued_at);
        }
        let what = format!(
            "{}{}",
            match &deidentified {
                Some(_) => "de-identified manifest",
                None => "manifest",
            },
            if refresh { " (refresh)" } else { "" }
        );
        // A copy's relay only stands in for a first fetch. What this node already holds
        // came from the owner, or was forgotten because the owner refused it: a copy's older
        // rules must not replace either.
        if source != owner {
            let store = self.holdings.store.clone();
            let slide = grant.slide;
            let held = tokio::task::spawn_blocking(move || store.copy(kind, &slide)).await??;
            if let Some(held) = held {
                // Except the owner's own newer statement, which a copy may relay: it replaces
                // an older one (it may list fewer grants), the manifest kept as it is.
                let kept_at = held
                    .consent
                    .as_ref()
                    .and_then(|c| c.verify().ok())
                    .map(|c| c.issued_at);
                let newer = stated_at.is_some_and(|at| kept_at.is_none_or(|kept| at > kept));
                if newer
                    && held.grant == signed.id()
                    && held.signed.slide_id() == manifest_signed.slide_id()
                {
                    let store = self.holdings.store.clone();
                    let updated = RemoteSlide {
                        consent: consent.clone(),
                        ..held
                    };
                    tokio::task::spawn_blocking(move || store.put_copy(kind, &slide, &updated))
                        .await??;
                    self.forget_owners_rules(&slide);
                    info!(%slide, %source, "the owner's newer consent statement, relayed by a copy, kept");
                }
                let asked = Asked {
                    action: grant.action.as_str(),
                    described: &manifest_label(true, refresh, &nonce),
                    user: None,
                };
                self.record_received(signed, &grant, &source, asked, &what, receipt);
                return Ok(());
            }
        }
        let summary = summarise(&manifest, Origin::Shared);
        let store = self.holdings.store.clone();
        let remote = RemoteSlide {
            signed: manifest_signed,
            summary,
            grant: signed.id(),
            stored_at: now_unix(),
            deidentified,
            consent,
        };
        let slide = grant.slide;
        let changed = tokio::task::spawn_blocking(move || {
            let before = store.copy(kind, &slide)?.map(|r| r.signed.slide_id());
            let changed = before != Some(remote.signed.slide_id());
            store.put_copy(kind, &slide, &remote)?;
            Ok::<_, crate::store::StoreError>(changed)
        })
        .await??;
        if changed {
            self.holdings.manifest_changed(&slide);
        }
        // The next decision reads the new statement (its grant list among it).
        self.forget_owners_rules(&slide);
        info!(%slide, owner = %grant.owner, what, "shared slide available");
        if kind == CopyKind::Replica {
            self.replicas.wanted.notify_one();
        }
        let asked = Asked {
            action: grant.action.as_str(),
            described: &manifest_label(source != owner, refresh, &nonce),
            user: None,
        };
        self.record_received(signed, &grant, &source, asked, &what, receipt);
        Ok(())
    }
}

/// The answer when this node's audit log could not take a decision in time: nothing leaves
/// unlogged, and the requester asks again later.
fn audit_failed() -> ControlResponse {
    warn!("audit log did not take the decision in time; nothing sent");
    ControlResponse::Failed {
        reason: "the serving node's audit log cannot be written now; try again later".into(),
    }
}

/// The owner refused this node a slide's manifest (or no longer holds the slide): asking
/// again soon gets the same answer, so the grantee backs off.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OwnerRefused(pub String);
