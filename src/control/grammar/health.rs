//! The grammar of `BACKEND HEALTH` (see `docs/commands.md#backend`): how
//! backends are health-checked. Pure parsing and printing; applying the
//! settings to the policy is the BACKEND verb's work.
//!
//! `BACKEND HEALTH OFF` turns every check off (no probe, no passive mark);
//! `BACKEND HEALTH PRINT` shows the policy as the line that sets it;
//! otherwise `BACKEND HEALTH` takes one or more `SETTING value` pairs, each
//! changing only that setting: `INTERVAL ms` (0: no probe), `TIMEOUT ms`,
//! `RISE n`, `FALL n` (0: probes never mark down), `PASSIVE_FALL n` (0:
//! sessions never mark down) and `DOWN_HOLD ms`. Every unknown word, missing
//! or invalid value is an error naming it.

use super::ParseError;
use std::fmt::{self, Display, Formatter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCommand {
    Off,
    Print,
    Set(HealthSettings),
}

/// The settings a `BACKEND HEALTH` line gives; `None` keeps the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HealthSettings {
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    pub passive_fall: Option<u32>,
    pub down_hold_ms: Option<u64>,
}

/// A setting's name and which values it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthSetting {
    Interval,
    Timeout,
    Rise,
    Fall,
    PassiveFall,
    DownHold,
}

impl HealthSetting {
    fn parse(word: &str) -> Option<HealthSetting> {
        Some(match word.to_ascii_uppercase().as_str() {
            "INTERVAL" => HealthSetting::Interval,
            "TIMEOUT" => HealthSetting::Timeout,
            "RISE" => HealthSetting::Rise,
            "FALL" => HealthSetting::Fall,
            "PASSIVE_FALL" => HealthSetting::PassiveFall,
            "DOWN_HOLD" => HealthSetting::DownHold,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            HealthSetting::Interval => "INTERVAL",
            HealthSetting::Timeout => "TIMEOUT",
            HealthSetting::Rise => "RISE",
            HealthSetting::Fall => "FALL",
            HealthSetting::PassiveFall => "PASSIVE_FALL",
            HealthSetting::DownHold => "DOWN_HOLD",
        }
    }

    /// What the value must be, for the error text.
    pub fn expects(self) -> &'static str {
        match self {
            HealthSetting::Interval | HealthSetting::DownHold => "milliseconds (0 or more)",
            HealthSetting::Timeout => "milliseconds (1 or more)",
            HealthSetting::Rise => "a count (1 or more)",
            HealthSetting::Fall | HealthSetting::PassiveFall => "a count (0 or more)",
        }
    }
}

impl Display for HealthSetting {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `args` are the words after `BACKEND HEALTH`.
pub fn parse(args: &[&str]) -> Result<HealthCommand, ParseError> {
    match args {
        [] => Err(ParseError::HealthNoSettings),
        [word] if word.eq_ignore_ascii_case("OFF") => Ok(HealthCommand::Off),
        [word] if word.eq_ignore_ascii_case("PRINT") => Ok(HealthCommand::Print),
        [word, extra, ..]
            if word.eq_ignore_ascii_case("OFF") || word.eq_ignore_ascii_case("PRINT") =>
        {
            Err(ParseError::UnexpectedArgument {
                command: if word.eq_ignore_ascii_case("OFF") {
                    "BACKEND HEALTH OFF"
                } else {
                    "BACKEND HEALTH PRINT"
                },
                token: extra.to_string(),
            })
        }
        _ => {
            let mut settings = HealthSettings::default();
            let mut words = args.iter();
            while let Some(word) = words.next() {
                let Some(setting) = HealthSetting::parse(word) else {
                    return Err(ParseError::UnknownHealthSetting {
                        setting: word.to_string(),
                    });
                };
                let Some(value) = words.next() else {
                    return Err(ParseError::HealthValueMissing { setting });
                };
                let invalid = || ParseError::InvalidHealthValue {
                    setting,
                    value: value.to_string(),
                };
                let ms = || value.parse::<u64>().map_err(|_| invalid());
                let count = || value.parse::<u32>().map_err(|_| invalid());
                match setting {
                    HealthSetting::Interval => settings.interval_ms = Some(ms()?),
                    HealthSetting::DownHold => settings.down_hold_ms = Some(ms()?),
                    HealthSetting::Timeout => {
                        settings.timeout_ms = Some(ms()?).filter(|t| *t > 0);
                        if settings.timeout_ms.is_none() {
                            return Err(invalid());
                        }
                    }
                    HealthSetting::Rise => {
                        settings.rise = Some(count()?).filter(|r| *r > 0);
                        if settings.rise.is_none() {
                            return Err(invalid());
                        }
                    }
                    HealthSetting::Fall => settings.fall = Some(count()?),
                    HealthSetting::PassiveFall => settings.passive_fall = Some(count()?),
                }
            }
            Ok(HealthCommand::Set(settings))
        }
    }
}

impl Display for HealthCommand {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("BACKEND HEALTH")?;
        match self {
            HealthCommand::Off => f.write_str(" OFF"),
            HealthCommand::Print => f.write_str(" PRINT"),
            HealthCommand::Set(s) => {
                let pairs: [(HealthSetting, Option<u64>); 6] = [
                    (HealthSetting::Interval, s.interval_ms),
                    (HealthSetting::Timeout, s.timeout_ms),
                    (HealthSetting::Rise, s.rise.map(u64::from)),
                    (HealthSetting::Fall, s.fall.map(u64::from)),
                    (HealthSetting::PassiveFall, s.passive_fall.map(u64::from)),
                    (HealthSetting::DownHold, s.down_hold_ms),
                ];
                for (setting, value) in pairs {
                    if let Some(v) = value {
                        write!(f, " {setting} {v}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_in_any_order_and_print_in_one() {
        let c = parse(&["fall", "2", "INTERVAL", "500", "Passive_Fall", "0"]).unwrap();
        assert_eq!(
            c,
            HealthCommand::Set(HealthSettings {
                interval_ms: Some(500),
                fall: Some(2),
                passive_fall: Some(0),
                ..HealthSettings::default()
            })
        );
        assert_eq!(
            c.to_string(),
            "BACKEND HEALTH INTERVAL 500 FALL 2 PASSIVE_FALL 0"
        );
        assert_eq!(parse(&["off"]), Ok(HealthCommand::Off));
        assert_eq!(parse(&["PRINT"]), Ok(HealthCommand::Print));
    }

    #[test]
    fn typos_name_the_offending_word() {
        let text = |args: &[&str]| parse(args).unwrap_err().to_string();
        assert_eq!(
            text(&["INTERVALL", "5"]),
            "Unknown health setting 'INTERVALL': expected INTERVAL, TIMEOUT, RISE, FALL, PASSIVE_FALL, DOWN_HOLD, OFF or PRINT."
        );
        assert_eq!(text(&["RISE"]), "RISE needs a value.");
        assert_eq!(
            text(&["RISE", "0"]),
            "Invalid value '0' for RISE: expected a count (1 or more)."
        );
        assert_eq!(
            text(&["TIMEOUT", "1s"]),
            "Invalid value '1s' for TIMEOUT: expected milliseconds (1 or more)."
        );
        assert_eq!(
            text(&["OFF", "now"]),
            "Unexpected argument 'now' after BACKEND HEALTH OFF."
        );
        assert_eq!(
            text(&[]),
            "BACKEND HEALTH needs settings (INTERVAL ms, TIMEOUT ms, RISE n, FALL n, PASSIVE_FALL n, DOWN_HOLD ms), OFF or PRINT."
        );
    }
}
