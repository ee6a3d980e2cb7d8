//! The kinds of value a setting holds: how the file writes one, how a `HERALD_*` variable
//! does, what the running server keeps, and how the reference shows its default.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::error::{parse_networks, ConfigError};
use super::told::{bad_env, PORT_NUMBER, WHOLE_NUMBER};

/// A kind of setting value.
pub trait Kind {
    /// The value as the file writes it.
    type Raw: DeserializeOwned;
    /// The value the server runs with.
    type Value: Clone + Eq + fmt::Debug;
    /// The running value of a raw one; `key` names it in an error.
    fn value(key: &str, raw: Self::Raw) -> Result<Self::Value, ConfigError>;
    /// The raw value of the environment variable `name`.
    fn from_env(name: &str, text: &str) -> Result<Self::Raw, ConfigError>;
    /// A value as the reference shows it.
    fn show(value: &Self::Value) -> String;
    /// A value as `Debug` shows it: a secret's kind hides it.
    fn debug(value: &Self::Value, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(value, f)
    }
}

fn number<T: FromStr>(name: &str, text: &str, must: &str) -> Result<T, ConfigError> {
    text.trim().parse().map_err(|_| bad_env(name, must, text))
}

/// The unit a duration is written in.
pub trait Unit {
    /// Its name, as an error says it.
    const NAME: &'static str;
    /// Its symbol, as the reference shows it.
    const SYMBOL: &'static str;
    /// A duration of `count` of it.
    fn duration(count: u64) -> Duration;
    /// How many of it `duration` is.
    fn count(duration: &Duration) -> u128;
}

/// Whole seconds.
pub struct Seconds;

impl Unit for Seconds {
    const NAME: &'static str = "seconds";
    const SYMBOL: &'static str = "s";
    fn duration(count: u64) -> Duration {
        Duration::from_secs(count)
    }
    fn count(duration: &Duration) -> u128 {
        duration.as_secs().into()
    }
}

/// Milliseconds.
pub struct Milliseconds;

impl Unit for Milliseconds {
    const NAME: &'static str = "milliseconds";
    const SYMBOL: &'static str = "ms";
    fn duration(count: u64) -> Duration {
        Duration::from_millis(count)
    }
    fn count(duration: &Duration) -> u128 {
        duration.as_millis()
    }
}

/// A duration, written as a whole number of `U`.
pub struct Time<U>(PhantomData<U>);

impl<U: Unit> Kind for Time<U> {
    type Raw = u64;
    type Value = Duration;
    fn value(_: &str, raw: u64) -> Result<Duration, ConfigError> {
        Ok(U::duration(raw))
    }
    fn from_env(name: &str, text: &str) -> Result<u64, ConfigError> {
        number(name, text, &format!("{WHOLE_NUMBER} ({})", U::NAME))
    }
    fn show(value: &Duration) -> String {
        format!("{} {}", U::count(value), U::SYMBOL)
    }
}

/// A duration in whole seconds.
pub type Secs = Time<Seconds>;

/// A duration in milliseconds.
pub type Millis = Time<Milliseconds>;

/// What a number read from the environment must be, as its error says.
pub trait Must {
    /// "a whole number ≥ 0", …
    const MUST: &'static str;
}

/// Any whole number.
pub struct Whole;

impl Must for Whole {
    const MUST: &'static str = WHOLE_NUMBER;
}

/// A port.
pub struct PortRange;

impl Must for PortRange {
    const MUST: &'static str = PORT_NUMBER;
}

/// A 32-bit number from 1 up.
pub struct FromOne;

impl Must for FromOne {
    const MUST: &'static str = "a whole number from 1 to 4294967295";
}

/// A whole number: a count, a size in bytes, a rate.
pub struct Count<T, M = Whole>(PhantomData<(T, M)>);

impl<T, M: Must> Kind for Count<T, M>
where
    T: DeserializeOwned + FromStr + Clone + Eq + fmt::Debug + fmt::Display,
{
    type Raw = T;
    type Value = T;
    fn value(_: &str, raw: T) -> Result<T, ConfigError> {
        Ok(raw)
    }
    fn from_env(name: &str, text: &str) -> Result<T, ConfigError> {
        number(name, text, M::MUST)
    }
    fn show(value: &T) -> String {
        value.to_string()
    }
}

/// A node's number: from 1 up.
pub type NodeNumber = Count<u32, FromOne>;

/// A port to bind; `0` picks a free one.
pub type Port = Count<u16, PortRange>;

/// `true` or `false` (`1` or `0` in the environment).
pub struct Flag;

impl Kind for Flag {
    type Raw = bool;
    type Value = bool;
    fn value(_: &str, raw: bool) -> Result<bool, ConfigError> {
        Ok(raw)
    }
    fn from_env(name: &str, text: &str) -> Result<bool, ConfigError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(bad_env(name, "true or false", text)),
        }
    }
    fn show(value: &bool) -> String {
        value.to_string()
    }
}

/// How a string setting is shown in `Debug` and the reference.
pub trait Shows {
    /// `value` as it may be shown.
    fn shown(value: &str) -> String;
}

/// Shown as it is.
pub struct AsIs;

impl Shows for AsIs {
    fn shown(value: &str) -> String {
        value.to_owned()
    }
}

/// A string, shown as `S` shows it.
pub struct Str<S = AsIs>(PhantomData<S>);

impl<S: Shows> Kind for Str<S> {
    type Raw = String;
    type Value = String;
    fn value(_: &str, raw: String) -> Result<String, ConfigError> {
        Ok(raw)
    }
    fn from_env(_: &str, text: &str) -> Result<String, ConfigError> {
        Ok(text.to_owned())
    }
    fn show(value: &String) -> String {
        format!("`{}`", S::shown(value))
    }
    fn debug(value: &String, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&S::shown(value), f)
    }
}

/// A string.
pub type Text = Str<AsIs>;

/// A path on the node.
pub struct FilePath;

impl Kind for FilePath {
    type Raw = PathBuf;
    type Value = PathBuf;
    fn value(_: &str, raw: PathBuf) -> Result<PathBuf, ConfigError> {
        Ok(raw)
    }
    fn from_env(_: &str, text: &str) -> Result<PathBuf, ConfigError> {
        Ok(PathBuf::from(text))
    }
    fn show(value: &PathBuf) -> String {
        format!("`{}`", value.display())
    }
}

/// A list of strings.
pub struct Strings;

impl Kind for Strings {
    type Raw = Vec<String>;
    type Value = Vec<String>;
    fn value(_: &str, raw: Vec<String>) -> Result<Vec<String>, ConfigError> {
        Ok(raw)
    }
    fn from_env(_: &str, text: &str) -> Result<Vec<String>, ConfigError> {
        Ok(text.split(',').map(|s| s.trim().to_owned()).collect())
    }
    fn show(value: &Vec<String>) -> String {
        if value.is_empty() {
            "none".to_owned()
        } else {
            value.join(", ")
        }
    }
}

/// A list of addresses (`10.0.0.5`) or networks (`10.0.0.0/8`).
pub struct Networks;

impl Kind for Networks {
    type Raw = Vec<String>;
    type Value = Vec<ipnet::IpNet>;
    fn value(key: &str, raw: Vec<String>) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        parse_networks(key, raw)
    }
    fn from_env(name: &str, text: &str) -> Result<Vec<String>, ConfigError> {
        Strings::from_env(name, text)
    }
    fn show(value: &Vec<ipnet::IpNet>) -> String {
        if value.is_empty() {
            "none".to_owned()
        } else {
            value
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// A value that may be left out: `None` unless given.
pub struct Opt<K>(PhantomData<K>);

impl<K: Kind> Kind for Opt<K> {
    type Raw = K::Raw;
    type Value = Option<K::Value>;
    fn value(key: &str, raw: K::Raw) -> Result<Option<K::Value>, ConfigError> {
        K::value(key, raw).map(Some)
    }
    fn from_env(name: &str, text: &str) -> Result<K::Raw, ConfigError> {
        K::from_env(name, text)
    }
    fn show(value: &Option<K::Value>) -> String {
        value.as_ref().map_or_else(|| "none".to_owned(), K::show)
    }
}

/// A secret string that may be left out: `Debug` never shows it.
pub struct Secret;

impl Kind for Secret {
    type Raw = String;
    type Value = Option<String>;
    fn value(_: &str, raw: String) -> Result<Option<String>, ConfigError> {
        Ok(Some(raw))
    }
    fn from_env(_: &str, text: &str) -> Result<String, ConfigError> {
        Ok(text.to_owned())
    }
    fn show(value: &Option<String>) -> String {
        value.as_ref().map_or("none", |_| "<redacted>").to_owned()
    }
    fn debug(value: &Option<String>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&value.as_ref().map(|_| "<redacted>"), f)
    }
}

/// A setting with a few named values (`log_format = "json"`).
pub trait Choices: Sized + Copy + Eq + fmt::Debug + 'static {
    /// Each value's name, in the order an error lists them.
    const NAMES: &'static [(&'static str, Self)];
}

/// One of a [`Choices`]' names.
pub struct Choice<C>(PhantomData<C>);

impl<C: Choices> Kind for Choice<C> {
    type Raw = String;
    type Value = C;
    fn value(key: &str, raw: String) -> Result<C, ConfigError> {
        C::NAMES
            .iter()
            .find(|(name, _)| *name == raw)
            .map(|(_, value)| *value)
            .ok_or_else(|| {
                let names: Vec<String> = C::NAMES.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                let listed = match names.split_last() {
                    Some((last, rest)) if !rest.is_empty() => {
                        format!("{} or {last}", rest.join(", "))
                    }
                    _ => names.join(""),
                };
                super::error::invalid(key, format!("must be {listed}, not '{raw}'"))
            })
    }
    fn from_env(_: &str, text: &str) -> Result<String, ConfigError> {
        Ok(text.to_owned())
    }
    fn show(value: &C) -> String {
        C::NAMES
            .iter()
            .find(|(_, v)| v == value)
            .map_or_else(String::new, |(name, _)| format!("`{name}`"))
    }
}
