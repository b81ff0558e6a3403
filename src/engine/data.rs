//! A session's data, anonymous sessions that start with it, and live updates of a user's
//! profile and roles.

use std::net::IpAddr;
use std::time::SystemTime;

use serde_json::value::RawValue;

use super::address::{address_bucket, network_bucket};
use super::rules::ANONYMOUS_WINDOW;
use super::{ActiveSession, Issued, SessionEngine, SessionKey, SessionRecord, SessionToken};
use crate::record::Lifetime;
use crate::store::{Admission, Counter, DataWrite};
use crate::{DataChange, Error, SessionData, StoreError};

/// How many fresh tokens an anonymous session tries; see `CREATE_ATTEMPTS` in lifecycle.
const CREATE_ATTEMPTS: usize = 3;

/// How many list-and-update rounds a live update makes at most; as for revocation, each extra
/// round needs a concurrent login or rotation.
const UPDATE_ROUNDS: usize = 8;

impl SessionEngine {
    /// The data of the session under `key`; empty if the session is gone.
    pub(crate) async fn load_data(&self, key: &SessionKey) -> Result<SessionData, Error> {
        Ok(self.store.load_data(key).await?.unwrap_or_default())
    }

    /// Applies `changes` to the data of the session under `key`, returning the values they
    /// replaced.
    pub(crate) async fn write_data(
        &self,
        key: &SessionKey,
        changes: &[DataChange],
    ) -> Result<Vec<Option<String>>, Error> {
        let limit = self.rules.max_data_size();
        match self.store.write_data(key, changes, limit).await? {
            DataWrite::Written(previous) => Ok(previous),
            DataWrite::TooLarge { size } => Err(Error::SessionDataTooLarge { size, limit }),
            DataWrite::Gone => {
                tracing::debug!(session = key.short(), "data write found its session gone");
                Err(Error::SessionChanged)
            }
        }
    }

    /// Starts an anonymous session holding the result of `changes`, if the bounds on new
    /// anonymous sessions allow one for `client`.
    pub(crate) async fn start_anonymous(
        &self,
        client: Option<IpAddr>,
        changes: &[DataChange],
    ) -> Result<(Issued, Vec<Option<String>>), Error> {
        let mut data = SessionData::new();
        let previous = data.apply(changes);
        let limit = self.rules.max_data_size();
        let size = data.size();
        if size > limit {
            return Err(Error::SessionDataTooLarge { size, limit });
        }
        self.admit_anonymous(client).await?;
        let now = SystemTime::now();
        let record = SessionRecord::anonymous(
            super::lifecycle::random_id()?,
            now,
            self.rules.absolute_end_of(Lifetime::Anonymous, now),
        );
        let expires_at = self
            .rules
            .idle_deadline_of(Lifetime::Anonymous, now, record.expires_at());
        for _ in 0..CREATE_ATTEMPTS {
            let token = SessionToken::generate().map_err(Error::Random)?;
            let key = token.key();
            if self.store.create(&key, &record, expires_at, &data).await? {
                tracing::debug!(session = key.short(), "anonymous session started");
                let session = ActiveSession {
                    key,
                    record,
                    expires_at,
                    refreshed: false,
                };
                return Ok((Issued { token, session }, previous));
            }
        }
        Err(StoreError::unavailable("store refused every fresh session key").into())
    }

    /// Counts a new anonymous session against the bounds for `client`, fairly across networks.
    ///
    /// Three counters bound every start: the client's address (an IPv4 address or an IPv6
    /// /64), its network (the IPv4 /24 or IPv6 /48 around it) and the network's fair share,
    /// one address's worth. Within its fair share a network needs nothing from anyone else.
    /// Past it, a start also draws on one allowance shared by all networks; that allowance is
    /// the only thing networks share, and only networks already past their fair share can
    /// spend it, so no flood, from however many networks, leaves a visitor from another
    /// network without a session.
    ///
    /// The first admission is the common one and one store call; only a network past its fair
    /// share makes the second. Each call is atomic and both include the address and network
    /// counters, so those bounds hold under any interleaving.
    async fn admit_anonymous(&self, client: Option<IpAddr>) -> Result<(), Error> {
        let (per_address, per_network, shared) = self.rules.anonymous_limits();
        let (address, network) = match client {
            Some(ip) => (address_bucket(ip, 64), network_bucket(ip)),
            None => ("unknown".to_owned(), "unknown".to_owned()),
        };
        let address = format!("anon:ip:{address}");
        let fair = format!("anon:fair:{network}");
        let network = format!("anon:net:{network}");
        let bound = |name| Counter {
            name,
            max: 0,
            window: ANONYMOUS_WINDOW,
        };
        let address = Counter {
            max: per_address,
            ..bound(&address)
        };
        let network = Counter {
            max: per_network,
            ..bound(&network)
        };
        let fair_share = Counter {
            max: per_address.min(per_network),
            ..bound(&fair)
        };
        let over_fair_share = Counter {
            max: shared,
            ..bound("anon:shared")
        };
        let mut verdict = self
            .store
            .admit_anonymous(&[address, network, fair_share])
            .await?;
        if let Admission::Refused { .. } = verdict {
            verdict = self
                .store
                .admit_anonymous(&[address, network, over_fair_share])
                .await?;
        }
        match verdict {
            Admission::Admitted => Ok(()),
            Admission::Refused { retry_after } => {
                tracing::warn!(
                    network = %client.map_or_else(|| "unknown".to_owned(), network_bucket),
                    retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
                    "refused a new anonymous session: too many started lately from its network"
                );
                Err(Error::TooManySessions { retry_after })
            }
        }
    }

    /// Replaces the profile and roles of every live session of `user_id`, returning how many
    /// there were.
    ///
    /// Lists and updates until a listing finds every session showing the new profile and
    /// nothing dropped, as revocation does: a session that rotates meanwhile is followed by the
    /// store to its new key, and one that a login creates meanwhile shows up in the next
    /// listing. Sessions created meanwhile that already carry the new profile need nothing (a
    /// personal access token copies its owner's live profile after it is written), so the
    /// rounds settle however fast the user creates sessions, once those that started before
    /// the update are through.
    pub(crate) async fn update_user(
        &self,
        user_id: &str,
        user: &RawValue,
        roles: &[String],
    ) -> Result<usize, Error> {
        let mut updated: std::collections::HashSet<String> = std::collections::HashSet::new();
        for _ in 0..UPDATE_ROUNDS {
            let listing = self.store.list(user_id).await?;
            let mut changed = false;
            for (key, stored) in &listing.live {
                if same_user(&stored.record, user, roles) {
                    continue;
                }
                if self.store.update_user(key, user, roles).await? {
                    updated.insert(stored.record.id().to_owned());
                }
                changed = true;
            }
            if !changed && listing.dropped == 0 {
                tracing::info!(user_id, sessions = updated.len(), "user updated live");
                return Ok(updated.len());
            }
        }
        Err(StoreError::unavailable("sessions kept changing through every update round").into())
    }

    /// Replaces the profile of the session under `key` alone, keeping its roles.
    pub(crate) async fn update_own_profile(
        &self,
        active: &ActiveSession,
        user: &RawValue,
    ) -> Result<SessionRecord, Error> {
        let roles = active.record.roles().to_vec();
        if !self.store.update_user(&active.key, user, &roles).await? {
            return Err(Error::SessionChanged);
        }
        Ok(active.record.clone().with_user(user.to_owned(), roles))
    }
}

fn same_user(record: &SessionRecord, user: &RawValue, roles: &[String]) -> bool {
    record.user().get() == user.get() && record.roles() == roles
}
