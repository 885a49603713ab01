//! Where settings come from and how they become typed: `default.toml`, the environment's
//! file, then `PISGATE__*` variables with `*_FILE` secrets read from their files; the
//! layers are deserialized once into the typed raw shape, and any value that does not fit
//! is reported under its setting's name and environment variable.

use super::{PREFIX, SEPARATOR, SettingsError};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::PathBuf;

/// Where to read the layered sources from. [`Sources::from_process`] is what the binary
/// uses; tests build one by hand.
#[derive(Debug, Clone)]
pub struct Sources {
    pub config_dir: PathBuf,
    pub environment: Option<String>,
    pub vars: HashMap<String, String>,
}

#[cfg(test)]
impl Sources {
    /// For tests: hands `load` the variables `vars` over an empty `default.toml` (in a
    /// directory that lives as long as the call) and no environment file.
    pub(crate) fn with_only_vars<T>(vars: &[(&str, &str)], load: impl FnOnce(&Sources) -> T) -> T {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("default.toml"), "").unwrap();
        load(&Sources {
            config_dir: dir.path().to_owned(),
            environment: None,
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        })
    }
}

impl Sources {
    /// The process environment; the config directory is `PISGATE_CONFIG_DIR` or `./config`.
    pub fn from_process() -> Sources {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Sources {
            config_dir: vars
                .get("PISGATE_CONFIG_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("config")),
            environment: vars.get("PISGATE_ENV").cloned().filter(|e| !e.is_empty()),
            vars,
        }
    }

    /// Reads the layers into one `config::Config`: files, then `PISGATE__*` variables with
    /// `*_FILE` secrets resolved.
    pub fn layered(&self) -> Result<config::Config, SettingsError> {
        let defaults = self.config_dir.join("default.toml");
        if !defaults.is_file() {
            return Err(SettingsError::NoConfigDir {
                dir: self.config_dir.clone(),
                cwd: std::env::current_dir().unwrap_or_default(),
            });
        }
        let mut builder = config::Config::builder().add_source(
            config::File::from(defaults)
                .format(config::FileFormat::Toml)
                .required(true),
        );
        if let Some(env) = &self.environment {
            let path = self.config_dir.join(format!("{env}.toml"));
            if !path.exists() {
                return Err(SettingsError::Load(format!(
                    "PISGATE_ENV={env} but {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let vars = resolve_file_variants(&self.vars)?;
        builder = builder.add_source(
            config::Environment::with_prefix(PREFIX)
                .prefix_separator(SEPARATOR)
                .separator(SEPARATOR)
                .source(Some(vars)),
        );
        builder
            .build()
            .map_err(|e| SettingsError::Load(e.to_string()))
    }

    /// The layers deserialized into `T`; a value that does not fit its type is an
    /// [`SettingsError::Invalid`] naming the setting.
    pub(crate) fn read<T: DeserializeOwned>(&self) -> Result<T, SettingsError> {
        serde_path_to_error::deserialize(self.layered()?).map_err(|e| {
            let key = e.path().to_string();
            let reason = reason(e.inner());
            if key.is_empty() || key == "." {
                SettingsError::Load(reason)
            } else {
                SettingsError::invalid(&key, reason)
            }
        })
    }
}

/// What an operator needs to read of a deserialization error (the key is named apart).
fn reason(e: &config::ConfigError) -> String {
    match e {
        config::ConfigError::At { error, .. } => reason(error),
        config::ConfigError::Type {
            unexpected,
            expected,
            ..
        } => {
            // `string "many"` reads better as `"many"`.
            let found = unexpected.to_string();
            let found = found.strip_prefix("string ").unwrap_or(&found);
            let wanted = match *expected {
                "a boolean" => "true or false",
                e if e.contains("integer") => "a whole number",
                other => other,
            };
            format!("{found} is not {wanted}")
        }
        other => other.to_string(),
    }
}

/// Replaces every `PISGATE__X_FILE=path` by `PISGATE__X=<file content>`.
fn resolve_file_variants(
    vars: &HashMap<String, String>,
) -> Result<config::Map<String, String>, SettingsError> {
    let mut out = config::Map::new();
    for (name, value) in vars {
        if !name.starts_with(&format!("{PREFIX}{SEPARATOR}")) {
            continue;
        }
        match name.strip_suffix("_FILE") {
            Some(base) => {
                if vars.contains_key(base) {
                    return Err(SettingsError::Ambiguous {
                        var: base.to_owned(),
                    });
                }
                let content =
                    std::fs::read_to_string(value).map_err(|source| SettingsError::SecretFile {
                        var: name.clone(),
                        source,
                    })?;
                let content = content.strip_suffix('\n').unwrap_or(&content);
                let content = content.strip_suffix('\r').unwrap_or(content);
                out.insert(base.to_owned(), content.to_owned());
            }
            None => {
                out.insert(name.clone(), value.clone());
            }
        }
    }
    Ok(out)
}
