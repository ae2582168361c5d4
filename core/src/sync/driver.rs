//! The sync driver: the one round that carries runs forward, for the
//! worker's loop and for `kihon4 sync run-once` alike. A round is the
//! detection of a queued `revoked` run (renewing its lease meanwhile), the
//! registrations with the provider that jobs wait for (when no worker does
//! them), the due jobs, and the runs those jobs finished.

use std::sync::Arc;

use uuid::Uuid;

use super::{SyncSettings, detect, jobs, runs};
use crate::consent::registrations;
use crate::error::CoreError;
use crate::jpki::verify::TrustAnchors;
use crate::notices::Notices;
use crate::provider::Provider;

/// Registrations carried out per round.
pub const REGISTRATIONS_PER_ROUND: u64 = 500;

/// How the customers whose certificate is no longer valid are found.
#[derive(Clone)]
pub enum Detection {
    /// Platform role: the provider's CRL, checked against these anchors.
    Crl(Arc<TrustAnchors>),
    /// Service-provider role: liveness checks through the provider.
    Liveness,
    /// Nothing to detect with (no trust anchors in the platform role).
    Unavailable(String),
}

impl Detection {
    /// Detection in this role, with the trust anchors loaded at start-up.
    pub fn new(role: crate::domain::JpkiRole, anchors: Option<Arc<TrustAnchors>>) -> Self {
        use crate::domain::JpkiRole;
        match (role, anchors) {
            (JpkiRole::ServiceProvider, _) => Self::Liveness,
            (JpkiRole::Platform, None) => Self::Unavailable(
                "KIHON4_TRUST_ANCHORS is not set, so the CRL cannot be verified".into(),
            ),
            (JpkiRole::Platform, Some(anchors)) => Self::Crl(anchors),
        }
    }
}

/// What a round takes on besides the due jobs.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Detection for a queued `revoked` run, when there is one.
    pub detect_queued: bool,
    /// The due registrations with the provider (when no worker carries
    /// them out on its own schedule).
    pub register: bool,
    /// Jobs claimed per round.
    pub jobs: u64,
}

/// What a round did.
#[derive(Debug, Default)]
pub struct Round {
    /// The queued run whose detection it carried out.
    pub detected: Option<Uuid>,
    pub registrations: registrations::Summary,
    pub jobs: jobs::Summary,
}

impl Round {
    /// Whether it found work: a detection, or jobs handled in any way.
    pub fn found_work(&self) -> bool {
        self.detected.is_some() || self.jobs.applied() + self.jobs.retried + self.jobs.failed > 0
    }

    /// Whether anything moved on: registrations done or failed, or jobs
    /// handled other than those left waiting for their registration.
    pub fn moved(&self) -> bool {
        let waiting = self
            .jobs
            .outcomes
            .get(registrations::AWAITING)
            .copied()
            .unwrap_or(0);
        self.jobs.applied() - waiting + self.jobs.retried + self.jobs.failed > 0
            || self.registrations.done + self.registrations.failed > 0
    }
}

/// What [`Driver::carry_out`] reports as it goes.
pub enum Progress<'a> {
    /// The run's detection starts.
    Detecting,
    /// A round is done: the run as it stands, and whether it waits for the
    /// provider (the round moved nothing).
    Round {
        view: &'a runs::RunView,
        waiting: bool,
    },
}

/// Carries sync runs forward through the provider.
#[derive(Clone)]
pub struct Driver {
    pub provider: Arc<dyn Provider>,
    pub notices: Arc<Notices>,
    pub detection: Detection,
    pub settings: SyncSettings,
    /// Whose claims its rounds make.
    pub owner: String,
}

impl Driver {
    /// One round, as `plan` says; the first step that fails ends it.
    pub async fn round(
        &self,
        db: &sea_orm::DatabaseConnection,
        plan: Plan,
    ) -> Result<Round, CoreError> {
        let mut round = Round::default();
        if plan.detect_queued
            && let Some(run) = runs::take_queued(db, self.settings.lease).await?
        {
            self.detect(db, run.id).await;
            round.detected = Some(run.id);
        }
        if plan.register {
            round.registrations = self.register_due(db).await?;
        }
        round.jobs = jobs::process_due(
            db,
            self.provider.as_ref(),
            &self.notices,
            self.settings,
            &self.owner,
            plan.jobs,
        )
        .await?;
        runs::complete_finished(db).await?;
        Ok(round)
    }

    /// The due registrations with the provider.
    pub async fn register_due(
        &self,
        db: &sea_orm::DatabaseConnection,
    ) -> Result<registrations::Summary, CoreError> {
        registrations::run_due(
            db,
            self.provider.as_ref(),
            &self.notices,
            self.settings.timezone,
            &self.owner,
            REGISTRATIONS_PER_ROUND,
        )
        .await
    }

    /// Carries the run `id` to its end in this process, with no worker
    /// running: its detection (a `revoked` run), then round after round,
    /// registrations included, until it is completed or failed and no job
    /// waits for a registration; a second apart while the provider is not
    /// answering. Returns the run as it ended.
    pub async fn carry_out(
        &self,
        db: &sea_orm::DatabaseConnection,
        id: Uuid,
        scope: super::Scope,
        jobs_per_round: u64,
        mut progress: impl FnMut(Progress<'_>),
    ) -> Result<runs::RunView, CoreError> {
        if scope == super::Scope::Revoked && runs::take(db, id, self.settings.lease).await? {
            progress(Progress::Detecting);
            self.detect(db, id).await;
        }
        let plan = Plan {
            detect_queued: false,
            register: true,
            jobs: jobs_per_round,
        };
        loop {
            let round = self.round(db, plan).await?;
            let view = runs::get(db, id).await?;
            let awaiting = view
                .counts
                .get(registrations::AWAITING)
                .copied()
                .unwrap_or(0);
            if matches!(view.run.status.as_str(), "completed" | "failed") && awaiting == 0 {
                progress(Progress::Round {
                    view: &view,
                    waiting: false,
                });
                return Ok(view);
            }
            let waiting = !round.moved();
            progress(Progress::Round {
                view: &view,
                waiting,
            });
            if waiting {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }

    /// Finds the customers a `revoked` run covers and enqueues them,
    /// renewing the run's detection lease meanwhile (a third of the lease
    /// apart). A failure fails the run; nothing is returned, what happened
    /// is in the run and the log.
    pub async fn detect(&self, db: &sea_orm::DatabaseConnection, run: Uuid) {
        let (provider, lease) = (self.provider.as_ref(), self.settings.lease);
        let finding = async {
            match &self.detection {
                Detection::Crl(anchors) => detect::by_crl(db, provider, anchors).await,
                Detection::Liveness => detect::by_liveness(db, provider).await,
                Detection::Unavailable(why) => Err(CoreError::Upstream(why.clone())),
            }
        };
        let renewing = async {
            loop {
                tokio::time::sleep(lease / 3).await;
                match runs::renew_detection(db, run, lease).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(run = %run, error = %e, "the detection lease could not be renewed")
                    }
                }
            }
        };
        tokio::pin!(finding);
        let found = tokio::select! {
            found = &mut finding => found,
            // The run was taken over and settled elsewhere: finish anyway;
            // what was found here is then not enqueued.
            () = renewing => finding.await,
        };
        match found {
            Ok(targets) => match runs::detected(db, run, &targets).await {
                Ok(n) => {
                    tracing::info!(run = %run, found = targets.len(), enqueued = n, "detection done")
                }
                Err(e) => {
                    tracing::error!(run = %run, error = %e, "detected customers could not be enqueued")
                }
            },
            Err(e) => {
                tracing::error!(run = %run, error = %e, "detection failed");
                if let Err(e) = runs::fail(db, run, &e.to_string()).await {
                    tracing::error!(run = %run, error = %e, "the failed run could not be recorded");
                }
            }
        }
    }
}
