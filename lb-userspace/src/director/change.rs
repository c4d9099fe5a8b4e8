//! Run-time changes (`drlb service|backend ...`) as edits of the config in force: the edited
//! config is then applied like any other, so a change is validated and refused whole exactly as
//! a config file is.

use std::net::IpAddr;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::config::{BackendConfig, Config, ServiceConfig, ServiceId};

/// A change requested at run time (`drlb service|backend ...`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum Change {
    ServiceAdd {
        service: ServiceConfig,
    },
    ServiceRemove {
        service: ServiceId,
    },
    BackendAdd {
        service: ServiceId,
        backend: BackendConfig,
    },
    BackendRemove {
        service: ServiceId,
        address: IpAddr,
    },
    BackendSetWeight {
        service: ServiceId,
        address: IpAddr,
        weight: u32,
    },
}

impl Change {
    /// The config with this change made; an error if it names what is not there (or adds what
    /// is). The result still has to pass validation.
    pub fn edit(&self, config: &Config) -> Result<Config> {
        let mut config = config.clone();
        match self {
            Self::ServiceAdd { service } => {
                if config.services.iter().any(|s| s.id() == service.id()) {
                    bail!("service {} exists already", service.id());
                }
                config.services.push(service.clone());
            }
            Self::ServiceRemove { service } => {
                let before = config.services.len();
                config.services.retain(|s| s.id() != *service);
                if config.services.len() == before {
                    bail!("there is no service {service}");
                }
            }
            Self::BackendAdd { service, backend } => {
                let s = find_service(&mut config, service)?;
                if s.backends.iter().any(|b| b.address == backend.address) {
                    bail!("service {service} has backend {} already", backend.address);
                }
                s.backends.push(backend.clone());
            }
            Self::BackendRemove { service, address } => {
                let s = find_service(&mut config, service)?;
                let before = s.backends.len();
                s.backends.retain(|b| b.address != *address);
                if s.backends.len() == before {
                    bail!("service {service} has no backend {address}");
                }
            }
            Self::BackendSetWeight {
                service,
                address,
                weight,
            } => {
                let s = find_service(&mut config, service)?;
                let b = s
                    .backends
                    .iter_mut()
                    .find(|b| b.address == *address)
                    .with_context(|| format!("service {service} has no backend {address}"))?;
                b.weight = *weight;
            }
        }
        Ok(config)
    }
}

/// The config with every change of `changes` made, in order (one change for `apply`: the
/// batch is refused whole if one of them is).
pub fn edit_all(changes: &[Change], config: &Config) -> Result<Config> {
    if let [change] = changes {
        return change.edit(config);
    }
    changes
        .iter()
        .enumerate()
        .try_fold(config.clone(), |config, (i, change)| {
            change
                .edit(&config)
                .with_context(|| format!("change {} of {}", i + 1, changes.len()))
        })
}

fn find_service<'a>(config: &'a mut Config, id: &ServiceId) -> Result<&'a mut ServiceConfig> {
    config
        .services
        .iter_mut()
        .find(|s| s.id() == *id)
        .with_context(|| format!("there is no service {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::director::test_support::{WEB, config};

    #[test]
    fn changes_edit_the_config_or_say_what_is_wrong() {
        let c = config(WEB);
        let web: ServiceId = "tcp/198.18.0.100:80".parse().unwrap();
        let backend = |a: &str| BackendConfig {
            interface: None,
            address: a.parse().unwrap(),
            weight: 2,
            mac: None,
        };
        let added = Change::BackendAdd {
            service: web,
            backend: backend("198.18.0.12"),
        }
        .edit(&c)
        .unwrap();
        assert_eq!(added.services[0].backends.len(), 2);
        let err = Change::BackendAdd {
            service: web,
            backend: backend("198.18.0.11"),
        }
        .edit(&c)
        .unwrap_err();
        assert!(err.to_string().contains("has backend 198.18.0.11 already"));
        let weighted = Change::BackendSetWeight {
            service: web,
            address: "198.18.0.11".parse().unwrap(),
            weight: 0,
        }
        .edit(&c)
        .unwrap();
        assert_eq!(weighted.services[0].backends[0].weight, 0);
        let err = Change::BackendRemove {
            service: web,
            address: "198.18.0.99".parse().unwrap(),
        }
        .edit(&c)
        .unwrap_err();
        assert!(err.to_string().contains("has no backend 198.18.0.99"));
        let other: ServiceId = "udp/198.18.0.100:80".parse().unwrap();
        assert!(
            Change::ServiceRemove { service: other }
                .edit(&c)
                .unwrap_err()
                .to_string()
                .contains("no service udp 198.18.0.100:80")
        );
        assert!(
            Change::ServiceRemove { service: web }
                .edit(&c)
                .unwrap()
                .services
                .is_empty()
        );
    }

    /// IPv6 services and backends travel the control socket (JSON) and edit the config alike;
    /// a backend of the other family is refused by validation, naming the service.
    #[test]
    fn ipv6_changes_are_made_like_ipv4_ones() {
        let c = config(WEB);
        let v6: ServiceId = "tcp/[2001:2::100]:80".parse().unwrap();
        let backend = |a: &str| BackendConfig {
            interface: None,
            address: a.parse().unwrap(),
            weight: 1,
            mac: None,
        };
        let add_service = Change::ServiceAdd {
            service: ServiceConfig {
                vip: v6.vip,
                port: v6.port,
                protocol: v6.protocol,
                scheduler: crate::config::Scheduler::Maglev,
                table_size: lb_common::DEFAULT_TABLE_SIZE,
                health_check: None,
                backends: Vec::new(),
            },
        };
        let add_backend = Change::BackendAdd {
            service: v6,
            backend: backend("2001:2::11"),
        };
        let json = serde_json::to_string(&add_backend).unwrap();
        assert!(
            json.contains("\"2001:2::100\"") && json.contains("\"2001:2::11\""),
            "{json}"
        );
        let add_backend: Change = serde_json::from_str(&json).unwrap();
        let edited = edit_all(&[add_service.clone(), add_backend], &c).unwrap();
        edited.validate().unwrap();
        assert_eq!(edited.services[1].id(), v6);
        let weight = Change::BackendSetWeight {
            service: v6,
            address: "2001:2::11".parse().unwrap(),
            weight: 0,
        };
        assert_eq!(
            weight.edit(&edited).unwrap().services[1].backends[0].weight,
            0
        );
        let mixed = Change::BackendAdd {
            service: v6,
            backend: backend("198.18.0.12"),
        }
        .edit(&edited)
        .unwrap();
        let err = format!("{:#}", mixed.validate().unwrap_err());
        assert!(
            err.contains("service tcp [2001:2::100]:80: backend 198.18.0.12 is IPv4"),
            "{err}"
        );
    }

    #[test]
    fn a_batch_is_made_in_order_or_refused_whole() {
        let c = config(WEB);
        let web: ServiceId = "tcp/198.18.0.100:80".parse().unwrap();
        let address: IpAddr = "198.18.0.11".parse().unwrap();
        let weight = |weight| Change::BackendSetWeight {
            service: web,
            address,
            weight,
        };
        let edited = edit_all(&[weight(3), weight(5)], &c).unwrap();
        assert_eq!(
            edited.services[0].backends[0].weight, 5,
            "the last one wins"
        );
        let remove = Change::BackendRemove {
            service: web,
            address,
        };
        let err = edit_all(&[remove.clone(), weight(2)], &c).unwrap_err();
        assert!(format!("{err:#}").contains("change 2 of 2"), "{err:#}");
        assert_eq!(
            c.services[0].backends[0].weight, 1,
            "the input is untouched"
        );
        assert!(edit_all(&[], &c).unwrap() == c);
    }
}
