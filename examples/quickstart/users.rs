//! The user table, kept in memory where an app would have its database, and the password hasher.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use actix_login::password;
use actix_login::password::PasswordHasher;
use serde::{Deserialize, Serialize};

/// What a session remembers about its user: enough to serve `/me`, never the password hash.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Profile {
    pub(crate) id: u64,
    pub(crate) username: String,
}

struct User {
    profile: Profile,
    /// Changed by `PUT /users/{username}/roles`; each is one of [`KNOWN_ROLES`].
    roles: Vec<String>,
    password_hash: String,
    /// Counts password changes (not hash upgrades): what logins name as the credentials they
    /// verified, so a login that checked a password being replaced leaves no session.
    password_version: u64,
    /// Whether the owner proved they read mail at `email`.
    email_verified: bool,
    /// Where the user's mail goes: [`address`] of the username at first, then the address of
    /// the last confirmed e-mail change. Stored trimmed and lowercased, unique among users.
    email: String,
    /// The address of the latest `POST /email`, until it is confirmed: only a link sent to
    /// this address may switch the account to it, so a later request makes earlier links
    /// useless.
    pending_email: Option<String>,
}

/// A new user's mail address: each user reads mail at `<username>@example.test` until they
/// change it (`POST /email`).
pub(crate) fn address(username: &str) -> String {
    format!("{username}@example.test")
}

/// How the quickstart hashes passwords. A real app would add a pepper from its secrets store:
/// `PasswordHasher::new().with_pepper(Pepper::new("2026", secret)?)`.
pub(crate) fn hasher() -> PasswordHasher {
    PasswordHasher::new()
}

/// Why [`Users::confirm_email`] refused an address.
pub(crate) enum EmailRefused {
    /// Not the address of the user's latest change request (or no such user).
    NotPending,
    /// Another user has had it confirmed meanwhile.
    Taken,
}

/// Stands in for the app's user database.
pub(crate) struct Users(RwLock<HashMap<String, User>>);

impl Users {
    pub(crate) async fn seed() -> Result<Self, password::PasswordError> {
        let mut users = HashMap::new();
        for (id, username, pw, roles) in [
            (1, "alice", "alice-password-123", vec!["admin".to_owned()]),
            (2, "bob", "bob-password-456", vec![]),
        ] {
            let user = User {
                profile: Profile {
                    id,
                    username: username.to_owned(),
                },
                roles,
                password_hash: hasher().hash(pw).await?,
                password_version: 0,
                // The demo accounts' addresses count as verified; new accounts' do not.
                email_verified: true,
                email: address(username),
                pending_email: None,
            };
            users.insert(username.to_owned(), user);
        }
        Ok(Self(RwLock::new(users)))
    }

    /// The user's profile, roles and password hash, if there is such a user.
    pub(crate) fn find(&self, username: &str) -> Option<(Profile, Vec<String>, String)> {
        let users = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let user = users.get(username)?;
        Some((
            user.profile.clone(),
            user.roles.clone(),
            user.password_hash.clone(),
        ))
    }

    /// The username and profile of the user with `id`, if there is one.
    pub(crate) fn find_by_id(&self, id: &str) -> Option<(String, Profile, Vec<String>)> {
        let users = self.0.read().unwrap_or_else(PoisonError::into_inner);
        users
            .iter()
            .find(|(_, user)| user.profile.id.to_string() == id)
            .map(|(name, user)| (name.clone(), user.profile.clone(), user.roles.clone()))
    }

    /// Whether the user's address is verified.
    pub(crate) fn email_verified(&self, username: &str) -> bool {
        let users = self.0.read().unwrap_or_else(PoisonError::into_inner);
        users.get(username).is_some_and(|user| user.email_verified)
    }

    /// The user's mail address, if there is such a user.
    pub(crate) fn email(&self, username: &str) -> Option<String> {
        let users = self.0.read().unwrap_or_else(PoisonError::into_inner);
        users.get(username).map(|user| user.email.clone())
    }

    /// Whether a user other than `username` has the address `email`.
    pub(crate) fn email_taken(&self, email: &str, username: &str) -> bool {
        let users = self.0.read().unwrap_or_else(PoisonError::into_inner);
        users
            .iter()
            .any(|(name, user)| name != username && user.email == email)
    }

    /// Records `email` as the address `username` asked to change to, replacing any earlier one.
    pub(crate) fn set_pending_email(&self, username: &str, email: &str) {
        let mut users = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(user) = users.get_mut(username) {
            user.pending_email = Some(email.to_owned());
        }
    }

    /// Switches `username` to `email`, verified, if it is the address of their latest change
    /// request and no other user has it: in one step, so two accounts confirming the same
    /// address cannot both get it. Returns the address it replaced.
    pub(crate) fn confirm_email(
        &self,
        username: &str,
        email: &str,
    ) -> Result<String, EmailRefused> {
        let mut users = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if users
            .iter()
            .any(|(name, user)| name != username && user.email == email)
        {
            return Err(EmailRefused::Taken);
        }
        let user = users.get_mut(username).ok_or(EmailRefused::NotPending)?;
        if user.pending_email.as_deref() != Some(email) {
            return Err(EmailRefused::NotPending);
        }
        user.pending_email = None;
        user.email_verified = true;
        Ok(std::mem::replace(&mut user.email, email.to_owned()))
    }

    /// Marks `address` verified for `username` if it still is the user's address; returns
    /// whether it was.
    pub(crate) fn verify_email(&self, username: &str, verified_address: &str) -> bool {
        let mut users = self.0.write().unwrap_or_else(PoisonError::into_inner);
        match users.get_mut(username) {
            Some(user) if user.email == verified_address => {
                user.email_verified = true;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn ids(&self) -> Vec<u64> {
        let users = self.0.read().unwrap_or_else(PoisonError::into_inner);
        users.values().map(|user| user.profile.id).collect()
    }

    /// Adds a user; `None` if the name is taken, or the address it comes with (see
    /// [`address`]) is another user's since an e-mail change.
    pub(crate) fn add(&self, username: &str, password_hash: String) -> Option<Profile> {
        let mut users = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let email = address(username);
        if users.contains_key(username) || users.values().any(|user| user.email == email) {
            return None;
        }
        let id = users.values().map(|u| u.profile.id).max().unwrap_or(0) + 1;
        let profile = Profile {
            id,
            username: username.to_owned(),
        };
        let user = User {
            profile: profile.clone(),
            roles: Vec::new(),
            password_hash,
            password_version: 0,
            email_verified: false,
            email,
            pending_email: None,
        };
        users.insert(username.to_owned(), user);
        Some(profile)
    }

    /// Replaces the user's roles; `None` if there is no such user.
    pub(crate) fn set_roles(&self, username: &str, roles: Vec<String>) -> Option<Profile> {
        let mut users = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let user = users.get_mut(username)?;
        user.roles = roles;
        Some(user.profile.clone())
    }

    /// Stores a new password; returns its version.
    pub(crate) fn change_password(&self, username: &str, hash: String) -> u64 {
        let mut users = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let Some(user) = users.get_mut(username) else {
            return 0;
        };
        user.password_hash = hash;
        user.password_version += 1;
        user.password_version
    }

    /// The same password, hashed with the current parameters: not a change.
    fn upgrade_hash(&self, username: &str, hash: String) {
        let mut users = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(user) = users.get_mut(username) {
            user.password_hash = hash;
        }
    }

    /// The version of the user's password, read before it is checked: a change in between
    /// makes the login fail safe rather than outlive the change.
    pub(crate) fn password_version(&self, username: &str) -> u64 {
        let users = self.0.read().unwrap_or_else(PoisonError::into_inner);
        users.get(username).map_or(0, |user| user.password_version)
    }

    /// Checks a password; unknown users cost the same argon2 work as a wrong password. A hash
    /// made with outdated parameters is replaced after a successful check.
    ///
    /// `lane` is the hashing queue's: a browser that logged in before is not queued behind
    /// strangers, and a stranger past the queue's bound gets `503 login_busy` at once.
    pub(crate) async fn verify(
        &self,
        lane: password::Lane,
        username: &str,
        pw: &str,
    ) -> Result<bool, password::PasswordError> {
        let hasher = hasher();
        let stored = self.find(username).map(|(_, _, hash)| hash);
        let verified = hasher.verify_in(lane, pw, stored.as_deref()).await?;
        if let (true, Some(stored)) = (verified, stored) {
            if hasher.needs_rehash(&stored) {
                self.upgrade_hash(username, hasher.hash(pw).await?);
                tracing::info!(username, "password hash upgraded");
            }
        }
        Ok(verified)
    }
}
