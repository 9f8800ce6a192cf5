//! `--notify-url`: the receiver of the leader's notifications. The URL may
//! hold a secret (a Slack webhook's path is its credential), so this type never
//! shows it: Display and Debug print the scheme and host only, and a value that
//! does not parse is refused without echoing it.

use std::fmt;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use http::Uri;

/// An `http://` URL to POST notifications to.
#[derive(Clone, PartialEq, Eq)]
pub struct NotifyUrl(Uri);

impl NotifyUrl {
    /// Parses an `http://host[:port]/path` URL; the error never contains the value.
    pub fn parse(s: &str) -> Result<Self, String> {
        let uri: Uri = s.trim().parse().map_err(|_| {
            "must be a URL like http://relay.monitoring:8080/hooks/canary".to_string()
        })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err("https is not supported (the guard links no CA root store): point it at an in-cluster relay over http (see README, \"Notifications\")".into())
            }
            _ => return Err("must start with http://".into()),
        }
        match uri.authority() {
            None => Err("must name a host, like http://relay.monitoring:8080/hooks/canary".into()),
            Some(a) if a.as_str().contains('@') => {
                Err("must not carry credentials before the host".into())
            }
            Some(_) => Ok(Self(uri)),
        }
    }

    /// The full URL, for the request only: never log it.
    pub fn uri(&self) -> &Uri {
        &self.0
    }
}

impl fmt::Display for NotifyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.0.authority().map_or("", |a| a.as_str());
        write!(f, "http://{host}/<redacted>")
    }
}

impl fmt::Debug for NotifyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NotifyUrl({self})")
    }
}

/// The clap parser of `--notify-url`: clap's own errors quote the value, so
/// this one words its error itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotifyUrlParser;

impl TypedValueParser for NotifyUrlParser {
    type Value = NotifyUrl;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<NotifyUrl, clap::Error> {
        let flag = arg.map_or_else(|| "--notify-url".to_string(), ToString::to_string);
        let why = match value.to_str() {
            Some(s) => match NotifyUrl::parse(s) {
                Ok(url) => return Ok(url),
                Err(why) => why,
            },
            None => "is not UTF-8".to_string(),
        };
        Err(clap::Error::raw(
            ErrorKind::ValueValidation,
            format!("invalid value for '{flag}' (not shown: it may hold a secret): {why}\n"),
        ))
    }
}
