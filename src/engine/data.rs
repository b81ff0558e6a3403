//! A session's data, anonymous sessions that start with it, and live updates of a user's
//! profile and roles.

use std::net::IpAddr;
use std::time::SystemTime;

use serde_json::value::RawValue;

use super::address::{address_bucket, network_bucket, region_bucket};
use super::rules::ANONYMOUS_WINDOW;
use super::{ActiveSession, Issued, SessionEngine, SessionKey, SessionRecord, SessionToken};
use crate::error::{Error, StoreError};
use crate::record::Lifetime;
use crate::record::{DataChange, SessionData};
use crate::store::{Admission, Counter, DataWrite};

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
    /// one address's worth; the region around the network (IPv4 /16, IPv6 /32) has a fair share
    /// too, one network's worth, so that whoever holds a whole provider allocation counts as
    /// one party, not 65,536. Within both fair shares a network needs nothing from anyone else.
    /// Past either, a start also draws on one allowance shared by all networks; that allowance
    /// is the only thing networks share, and only networks already past a fair share can spend
    /// it, so no flood, from however many networks, leaves a visitor from another region
    /// without a session.
    ///
    /// The first admission is the common one and one store call; only a network past a fair
    /// share makes the second. Each call is atomic and both include the address and network
    /// counters, so those bounds hold under any interleaving.
    ///
    /// A client whose address is unknown (no trusted proxy named it) can only draw on the
    /// shared allowance: counted under one made-up address, every such visitor would share
    /// one address's bound, which one of them could spend for all.
    async fn admit_anonymous(&self, client: Option<IpAddr>) -> Result<(), Error> {
        let (per_address, per_network, shared) = self.rules.anonymous_limits();
        let bound = |name, max| Counter {
            name,
            max,
            window: ANONYMOUS_WINDOW,
        };
        let shared_allowance = bound("anon:shared", shared);
        let verdict = match client {
            None => self.store.admit_anonymous(&[shared_allowance]).await?,
            Some(ip) => {
                let address = format!("anon:ip:{}", address_bucket(ip, 64));
                let network = format!("anon:net:{}", network_bucket(ip));
                let network_share = format!("anon:fair:{}", network_bucket(ip));
                let region_share = format!("anon:region:{}", region_bucket(ip));
                let address = bound(&address, per_address);
                let network = bound(&network, per_network);
                let network_share = bound(&network_share, per_address.min(per_network));
                let region_share = bound(&region_share, per_network);
                let verdict = self
                    .store
                    .admit_anonymous(&[address, network, network_share, region_share])
                    .await?;
                match verdict {
                    Admission::Refused { .. } => {
                        self.store
                            .admit_anonymous(&[address, network, shared_allowance])
                            .await?
                    }
                    admitted => admitted,
                }
            }
        };
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
