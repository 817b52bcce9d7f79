//! Settings Sage defines that this service accepts but does not act on yet. Each one given
//! explicitly (flag or variable) is named in a start-up warning, so nobody relies on it unawares.

use clap::ArgMatches;
use clap::parser::ValueSource;

/// One setting that is accepted and not acted on yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InertSetting {
    pub flag: &'static str,
    pub variable: &'static str,
}

impl std::fmt::Display for InertSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "setting --{} ({}) is accepted but not acted on yet",
            self.flag, self.variable
        )
    }
}

/// (clap id, flag, variable)
const INERT: &[(&str, &str, &str)] = &[
    ("logs_dir", "logs-dir", "SAGE_LOGS_DIR_PATH"),
    ("memory_root", "memory_root", "MEMORY_ROOT_PATH"),
];

/// The inert settings the caller gave explicitly, in declaration order.
pub(super) fn explicitly_set(matches: &ArgMatches) -> Vec<InertSetting> {
    INERT
        .iter()
        .filter(|(id, _, _)| {
            matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        })
        .map(|&(_, flag, variable)| InertSetting { flag, variable })
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::config::Config;

    #[test]
    fn every_inert_setting_is_a_setting() {
        let command = Config::command();
        for (id, flag, _) in INERT {
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_id() == id)
                .unwrap_or_else(|| panic!("{id} is not a setting"));
            assert_eq!(arg.get_long(), Some(*flag));
        }
    }

    #[test]
    fn only_settings_given_explicitly_are_named() {
        let matches = Config::command()
            .try_get_matches_from([
                "sage",
                "--memory_root",
                "/srv/memories",
                "--logs-dir",
                "/srv/logs",
            ])
            .unwrap();
        let named: Vec<&str> = explicitly_set(&matches).iter().map(|s| s.flag).collect();
        assert_eq!(named, ["logs-dir", "memory_root"]);
    }
}
