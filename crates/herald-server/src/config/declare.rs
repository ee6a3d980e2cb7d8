//! How a server setting is declared: once, with its TOML key, its `HERALD_*` variable if
//! it has one, its default, its bounds, whether a reload applies it, and its doc. The
//! [`settings!`](crate::config::declare::settings) macro turns a group of declarations into
//! the subsystem's settings struct and everything the configuration does with them:
//! reading the keys, the environment on top, the defaults, the checks, the list of keys a
//! reload cannot apply, and the reference (docs/config-reference.md).

use std::fmt;

use super::kinds::Kind;

/// Whether a running server applies a new value at a reload (SIGHUP, `herald reload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    /// A reload applies it.
    Reload,
    /// A reload keeps the running value and names the key in a warning.
    Restart,
}

impl fmt::Display for Applies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Applies::Reload => "reload",
            Applies::Restart => "restart",
        })
    }
}

/// One setting as the reference shows it.
#[derive(Debug, Clone)]
pub struct Setting {
    /// Its key in the TOML file.
    pub key: &'static str,
    /// Its environment variable, which wins over the file.
    pub env: Option<&'static str>,
    /// Its default, as the reference shows it.
    pub default: String,
    /// What a value must be, as the error for one that is not says it.
    pub bounds: &'static [&'static str],
    /// Whether a reload applies it.
    pub applies: Applies,
    /// What it is for: its doc comment.
    pub doc: &'static str,
}

/// A subsystem's settings, as the reference shows them.
#[derive(Debug, Clone)]
pub struct Section {
    /// The heading.
    pub title: &'static str,
    /// Its settings, in the order declared.
    pub settings: Vec<Setting>,
}

/// A value shown by its kind's `Debug` (a secret's hidden).
pub struct Shown<'a, K: Kind>(pub &'a K::Value);

impl<K: Kind> fmt::Debug for Shown<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        K::debug(self.0, f)
    }
}

/// Declares a subsystem's settings: a struct of typed values, and `RAW`, its keys as the
/// file and the environment give them. Each setting is its doc comment, then
/// `field: Kind = default, key "toml_key" [env "HERALD_VAR"], Reload|Restart` and any
/// number of `check |value| condition => "problem"` (in the order they are checked),
/// ending with `;`. A trailing `[extra] pub field: Type;` is no setting: a value the subsystem
/// adds at start (its default until then).
macro_rules! settings {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident($raw:ident) in $title:literal {
            $(
                $(#[doc = $doc:literal])*
                $field:ident: $kind:ty = $default:expr,
                key $key:literal $(env $env:literal)?, $applies:ident
                $(, check $check:expr => $problem:literal)*;
            )*
            $(
                [extra] $(#[doc = $xdoc:literal])* $xvis:vis $xfield:ident: $xty:ty;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq)]
        $vis struct $name {
            $(
                $(#[doc = $doc])*
                pub $field: <$kind as $crate::config::kinds::Kind>::Value,
            )*
            $(
                $(#[doc = $xdoc])*
                $xvis $xfield: $xty,
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    $($field: $default,)*
                    $($xfield: Default::default(),)*
                }
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    $(.field(
                        stringify!($field),
                        &$crate::config::declare::Shown::<$kind>(&self.$field),
                    ))*
                    $(.field(stringify!($xfield), &self.$xfield))*
                    .finish()
            }
        }

        #[doc = concat!("The keys of [`", stringify!($name), "`] as given, before they are checked. No `Debug`: a value may be a secret.")]
        #[derive(Default)]
        $vis struct $raw {
            $($field: Option<<$kind as $crate::config::kinds::Kind>::Raw>,)*
        }

        #[allow(dead_code)]
        impl $raw {
            /// The keys, in the order declared.
            pub(crate) const KEYS: &'static [&'static str] = &[$($key),*];

            /// The keys, in the order declared.
            pub(crate) fn keys() -> Vec<&'static str> {
                Self::KEYS.to_vec()
            }

            /// Reads the value of `key` from `map` if it is one of these keys.
            pub(crate) fn take<'de, A: serde::de::MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                match key {
                    $($key => {
                        self.$field = Some(map.next_value()?);
                        Ok(true)
                    })*
                    _ => Ok(false),
                }
            }

            /// The environment's values over the file's.
            pub(crate) fn overlay(
                &mut self,
                env: &dyn Fn(&str) -> Option<String>,
            ) -> Result<(), $crate::config::error::ConfigError> {
                let _ = env;
                $($(
                    if let Some(text) = env($env) {
                        self.$field = Some(
                            <$kind as $crate::config::kinds::Kind>::from_env($env, &text)?,
                        );
                    }
                )?)*
                Ok(())
            }
        }

        #[allow(dead_code)]
        impl $name {
            /// The values given, defaults for the rest; not yet checked.
            pub(crate) fn from_raw(raw: $raw) -> Result<Self, $crate::config::error::ConfigError> {
                let d = Self::default();
                Ok($name {
                    $($field: match raw.$field {
                        Some(raw) => <$kind as $crate::config::kinds::Kind>::value($key, raw)?,
                        None => d.$field,
                    },)*
                    $($xfield: d.$xfield,)*
                })
            }

            /// Checks each value against its declared bounds, naming the first at fault.
            pub(crate) fn check(&self) -> Result<(), $crate::config::error::ConfigError> {
                $($({
                    let ok: fn(&<$kind as $crate::config::kinds::Kind>::Value) -> bool = $check;
                    if !ok(&self.$field) {
                        return Err($crate::config::error::invalid($key, $problem));
                    }
                })*)*
                Ok(())
            }

            /// Each key that a reload cannot apply, and whether `new` changes it.
            pub(crate) fn changed(&self, new: &Self) -> Vec<(&'static str, bool)> {
                let mut changed = Vec::new();
                $(
                    if $crate::config::declare::Applies::$applies
                        == $crate::config::declare::Applies::Restart
                    {
                        changed.push(($key, self.$field != new.$field));
                    }
                )*
                changed
            }

            /// The declarations, for the reference.
            pub fn section() -> $crate::config::declare::Section {
                let d = Self::default();
                $crate::config::declare::Section {
                    title: $title,
                    settings: vec![$(
                        $crate::config::declare::Setting {
                            key: $key,
                            env: None $(.or(Some($env)))?,
                            default: <$kind as $crate::config::kinds::Kind>::show(&d.$field),
                            bounds: &[$($problem),*],
                            applies: $crate::config::declare::Applies::$applies,
                            doc: concat!($($doc, "\n"),*),
                        },
                    )*],
                }
            }
        }
    };
}

pub(crate) use settings;

/// The names whose flag is set, in order: what a reload reports as changed.
pub(crate) struct Changed(pub(crate) Vec<&'static str>);

impl FromIterator<(&'static str, bool)> for Changed {
    fn from_iter<I: IntoIterator<Item = (&'static str, bool)>>(pairs: I) -> Self {
        Changed(
            pairs
                .into_iter()
                .filter_map(|(name, set)| set.then_some(name))
                .collect(),
        )
    }
}
