//! What a reload changed in an app it kept.

use crate::app_config::AppConfig;

/// What a reload changed in an app that it kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppUpdate {
    /// The key: new connections and API calls use the new one; open sockets stay.
    pub key: bool,
    /// The secret: signatures made with the old one are refused from now on.
    pub secret: bool,
    /// Enabled or disabled (a disabled app's sockets are closed with 4003).
    pub enabled: bool,
    /// Any of the limits (`AppLimits`, the plan's included).
    pub limits: bool,
    /// The webhook endpoints or their filters.
    pub webhooks: bool,
    /// Anything else: `terminate_close_code`, `user_authentication_timeout`, `cache_ttl`,
    /// `subscription_count`, the history bounds.
    pub other: bool,
}

impl AppUpdate {
    pub(super) fn between(old: &AppConfig, new: &AppConfig) -> AppUpdate {
        AppUpdate {
            key: old.key != new.key,
            secret: old.secret != new.secret,
            enabled: old.enabled != new.enabled,
            limits: old.limits != new.limits,
            webhooks: old.webhooks != new.webhooks,
            other: old.terminate_close_code != new.terminate_close_code
                || old.user_authentication_timeout != new.user_authentication_timeout
                || old.cache_ttl != new.cache_ttl
                || old.subscription_count != new.subscription_count
                || old.history != new.history,
        }
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.names().is_empty()
    }

    /// The names of what changed, for logs (never a value).
    pub fn names(&self) -> Vec<&'static str> {
        [
            ("key", self.key),
            ("secret", self.secret),
            ("enabled", self.enabled),
            ("limits", self.limits),
            ("webhooks", self.webhooks),
            ("other settings", self.other),
        ]
        .into_iter()
        .collect::<crate::config::declare::Changed>()
        .0
    }
}
