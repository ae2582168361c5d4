//! Life events on the simulated register: each revokes the certificate the
//! person holds with the reason J-LIS uses and, where the person lives on
//! with a card, issues a new one.

use kihon4_core::domain::{Basic4, FieldErrors, RawBasic4, ValueError};

use crate::Simulator;
use crate::store::{IssuedCertificate, LifeEvent, Person};

/// The kinds of life event, with their CRL reason codes (PROVIDER-PROTOCOL.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// One of the four items changed (address): affiliationChanged.
    Move,
    /// The name changed: affiliationChanged.
    Rename,
    /// cessationOfOperation.
    Death,
    /// certificateHold, never released.
    CardLost,
    /// superseded.
    Renew,
}

impl EventKind {
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "move" => Self::Move,
            "rename" => Self::Rename,
            "death" => Self::Death,
            "card_lost" => Self::CardLost,
            "renew" => Self::Renew,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Move => "move",
            Self::Rename => "rename",
            Self::Death => "death",
            Self::CardLost => "card_lost",
            Self::Renew => "renew",
        }
    }

    pub fn reason_code(self) -> u8 {
        match self {
            Self::Move | Self::Rename => 3,
            Self::Renew => 4,
            Self::Death => 5,
            Self::CardLost => 6,
        }
    }

    /// Whether the person gets a new certificate at once.
    fn reissues(self) -> bool {
        matches!(self, Self::Move | Self::Rename | Self::Renew)
    }
}

/// The four items after an event: the given ones over the current ones.
pub fn merged(current: &Basic4, given: &RawBasic4<'_>) -> Result<Basic4, FieldErrors> {
    let flags_of = |text: Option<&str>, flags: Option<&str>, old_flags: &str| match (text, flags) {
        (_, Some(f)) => Some(f.to_owned()),
        // A new text without flags has no substitute characters.
        (Some(_), None) => None,
        (None, None) => Some(old_flags.to_owned()),
    };
    let birth = current.birth_date.to_iso();
    let name_flags = flags_of(
        given.name,
        given.name_substitute_flags,
        current.name.flags().as_str(),
    );
    let address_flags = flags_of(
        given.address,
        given.address_substitute_flags,
        current.address.flags().as_str(),
    );
    Basic4::parse(RawBasic4 {
        name: Some(given.name.unwrap_or(current.name.as_str())),
        name_substitute_flags: name_flags.as_deref(),
        address: Some(given.address.unwrap_or(current.address.as_str())),
        address_substitute_flags: address_flags.as_deref(),
        birth_date: Some(given.birth_date.unwrap_or(&birth)),
        gender: Some(given.gender.unwrap_or(current.gender.code())),
    })
}

/// What an event did.
pub struct Outcome {
    pub revoked: IssuedCertificate,
    pub new_certificate: Option<IssuedCertificate>,
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the person is deceased")]
    Deceased,
    #[error("the person holds no valid certificate")]
    NoCertificate,
    #[error("invalid: {0}")]
    Invalid(FieldErrors),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Applies an event to a person.
/// With `reissue` false, a move or rename leaves the person without a
/// certificate for now (J-LIS answers `awaiting_reissue` meanwhile).
pub async fn apply(
    sim: &Simulator,
    mut person: Person,
    kind: EventKind,
    given: RawBasic4<'_>,
    reissue: bool,
) -> Result<Outcome, EventError> {
    if person.deceased {
        return Err(EventError::Deceased);
    }
    let current = sim
        .store
        .current_certificate(&person.id)
        .await
        .map_err(anyhow::Error::from)?
        .ok_or(EventError::NoCertificate)?;
    let basic4 = merged(&person.basic4, &given).map_err(|e| {
        let mut prefixed = FieldErrors::new();
        prefixed.extend_prefixed("basic4", e);
        EventError::Invalid(prefixed)
    })?;
    let must_change = match kind {
        EventKind::Move => Some(("basic4.address", basic4.address != person.basic4.address)),
        EventKind::Rename => Some(("basic4.name", basic4.name != person.basic4.name)),
        _ => None,
    };
    if let Some((field, false)) = must_change {
        let mut e = FieldErrors::new();
        e.push(
            field,
            ValueError::invalid(format!("must change for a {}", kind.as_str())),
        );
        return Err(EventError::Invalid(e));
    }
    person.partition = crate::municipality::of_address(basic4.address.as_str());
    person.basic4 = basic4;
    person.deceased = kind == EventKind::Death;
    let new_certificate = if kind.reissues() && (reissue || kind == EventKind::Renew) {
        let (ca, p) = (sim.ca.clone(), person.clone());
        // Key generation is CPU work: off the async threads.
        let issued = tokio::task::spawn_blocking(move || {
            crate::residents::issue(&ca, &p.id, &p.basic4, &p.partition)
        })
        .await
        .map_err(anyhow::Error::from)??;
        Some(issued)
    } else {
        None
    };
    sim.store
        .record_event(LifeEvent {
            person: &person,
            kind: kind.as_str(),
            reason: kind.reason_code(),
            new_certificate: new_certificate.as_ref(),
        })
        .await
        .map_err(anyhow::Error::from)?;
    Ok(Outcome {
        revoked: current,
        new_certificate,
    })
}
