//! The config file's keys as written, each handed to the section that declares it: no
//! `Debug`, as it holds every secret in the clear.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::server::{RawProcessSettings, RawServerSettings};
use crate::adapter::config::RawAdapter;
use crate::admin::settings::RawAdminConfig;
use crate::admission::settings::RawNetLimits;
use crate::app_config::fields::{RawApp, RawPlan};
use crate::app_config::RawAppsSettings;
use crate::config::ConfigError;
use crate::store::settings::RawStoreSettings;
use crate::tls::settings::RawTlsSettings;
use crate::webhooks::settings::RawWebhookOptions;

/// Declares the sections once: the raw file's fields, the keys they know, how a key finds
/// its section and how the environment is laid over them.
macro_rules! sections {
    ($($field:ident: $raw:ty),* $(,)?) => {
        /// The file's keys, by the section that declares them, then the plans and apps.
        #[derive(Default)]
        pub(crate) struct RawConfig {
            $(pub(crate) $field: $raw,)*
            pub(crate) plans: HashMap<String, RawPlan>,
            pub(crate) apps: Vec<RawApp>,
        }

        impl RawConfig {
            /// Every key the file may hold.
            fn keys() -> &'static [&'static str] {
                static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
                KEYS.get_or_init(|| {
                    let mut keys = Vec::new();
                    $(keys.extend(<$raw>::keys());)*
                    keys.extend(["plans", "apps"]);
                    keys
                })
            }

            fn take<'de, A: MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<(), A::Error> {
                $(if self.$field.take(key, map)? {
                    return Ok(());
                })*
                match key {
                    "plans" => self.plans = map.next_value()?,
                    "apps" => self.apps = map.next_value()?,
                    _ => return Err(de::Error::unknown_field(key, Self::keys())),
                }
                Ok(())
            }

            /// The `HERALD_*` variables over the file's values.
            pub(crate) fn overlay(
                &mut self,
                env: &dyn Fn(&str) -> Option<String>,
            ) -> Result<(), ConfigError> {
                $(self.$field.overlay(env)?;)*
                Ok(())
            }
        }
    };
}

sections! {
    server: RawServerSettings,
    tls: RawTlsSettings,
    net: RawNetLimits,
    webhooks: RawWebhookOptions,
    process: RawProcessSettings,
    admin: RawAdminConfig,
    store: RawStoreSettings,
    apps_settings: RawAppsSettings,
    adapter: RawAdapter,
}

impl<'de> Deserialize<'de> for RawConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FileVisitor)
    }
}

struct FileVisitor;

impl<'de> Visitor<'de> for FileVisitor {
    type Value = RawConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct RawConfig")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawConfig, A::Error> {
        let mut raw = RawConfig::default();
        while let Some(key) = map.next_key_seed(KnownKey)? {
            raw.take(&key, &mut map)?;
        }
        Ok(raw)
    }
}

/// A key of the file, refused as it is read when no section declares it, so the parser
/// places the error on the key.
struct KnownKey;

impl<'de> DeserializeSeed<'de> for KnownKey {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl Visitor<'_> for KnownKey {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a setting's name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<String, E> {
        let keys = RawConfig::keys();
        if keys.contains(&key) {
            Ok(key.to_owned())
        } else {
            Err(E::unknown_field(key, keys))
        }
    }
}
