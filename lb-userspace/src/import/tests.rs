//! Translation tests: keepalived and ipvsadm texts to drlb services. Every output is parsed
//! and validated with drlb's own `Config::parse`.

use std::path::Path;

use proptest::prelude::*;

use super::{source::MemSource, *};
use crate::config::{
    Config, Protocol, Scheduler, ServiceConfig,
    health_check::{CheckKind, HealthCheckConfig, OnFailure},
};

fn import_with(text: &str, options: &Options) -> (Config, Outcome) {
    let source = MemSource::new(&[("/etc/keepalived/keepalived.conf", text)]);
    let outcome = keepalived(
        Path::new("/etc/keepalived/keepalived.conf"),
        &source,
        options,
    )
    .unwrap();
    let config =
        Config::parse(&outcome.config).unwrap_or_else(|e| panic!("{e:#}\n{}", outcome.config));
    (config, outcome)
}

fn import(text: &str) -> (Config, Outcome) {
    import_with(text, &Options::default())
}

/// A DR virtual server on 198.18.0.100:80 with `settings` and two real servers with `rs`.
fn dr(settings: &str, rs: &str) -> String {
    format!(
        "virtual_server 198.18.0.100 80 {{\n  lb_kind DR\n  protocol TCP\n{settings}\n  real_server 198.18.0.11 80 {{\n{rs}\n  }}\n  real_server 198.18.0.12 80 {{\n  weight 3\n{rs}\n  }}\n}}\n"
    )
}

fn only_service(config: &Config) -> &ServiceConfig {
    assert_eq!(config.services.len(), 1, "{config:?}");
    &config.services[0]
}

fn check_of(config: &Config) -> HealthCheckConfig {
    only_service(config).health_check.clone().unwrap()
}

fn messages(outcome: &Outcome) -> String {
    outcome
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_dr_service_becomes_a_service_with_its_weights() {
    let (config, outcome) = import(&dr(
        "  lb_algo wrr",
        "    TCP_CHECK {\n connect_timeout 2\n }",
    ));
    assert_eq!(
        outcome.exit_code(),
        EXIT_TRANSLATED,
        "{}",
        messages(&outcome)
    );
    let service = only_service(&config);
    assert_eq!(
        (service.vip.to_string(), service.port, service.protocol),
        ("198.18.0.100".to_owned(), 80, Protocol::Tcp)
    );
    assert_eq!(service.scheduler, Scheduler::Maglev);
    let backends: Vec<_> = service
        .backends
        .iter()
        .map(|b| (b.address.to_string(), b.weight))
        .collect();
    assert_eq!(
        backends,
        [("198.18.0.11".to_owned(), 1), ("198.18.0.12".to_owned(), 3)]
    );
    assert!(outcome.config.contains("lb_algo wrr -> maglev"));
    assert!(
        outcome
            .config
            .contains("(/etc/keepalived/keepalived.conf:1)")
    );
}

#[test]
fn every_lb_algo_has_a_scheduler() {
    for (algo, scheduler, approximate) in [
        ("rr", Scheduler::Maglev, false),
        ("wrr", Scheduler::Maglev, false),
        ("lc", Scheduler::Maglev, false),
        ("wlc", Scheduler::Maglev, false),
        ("mh", Scheduler::Maglev, false),
        ("sh", Scheduler::SourceHash, false),
        ("dh", Scheduler::Maglev, true),
        ("lblc", Scheduler::Maglev, true),
        ("lblcr", Scheduler::Maglev, true),
        ("sed", Scheduler::Maglev, true),
        ("nq", Scheduler::Maglev, true),
        ("fo", Scheduler::Maglev, true),
        ("ovf", Scheduler::Maglev, true),
        ("twos", Scheduler::Maglev, true),
    ] {
        let (config, outcome) = import(&dr(&format!("  lvs_sched {algo}"), ""));
        assert_eq!(only_service(&config).scheduler, scheduler, "{algo}");
        assert_eq!(outcome.exit_code(), EXIT_TRANSLATED, "{algo}");
        let noted = outcome
            .diagnostics
            .iter()
            .any(|d| d.message.starts_with(&format!("lb_algo {algo}:")));
        assert_eq!(noted, approximate, "{algo}: {}", messages(&outcome));
        assert!(outcome.config.contains(&format!("# lb_algo {algo} -> ")));
    }
}

#[test]
fn persistence_becomes_source_hash_with_a_comment() {
    let (config, outcome) = import(&dr("  lb_algo rr\n  persistence_timeout 600", ""));
    assert_eq!(only_service(&config).scheduler, Scheduler::SourceHash);
    assert_eq!(outcome.exit_code(), EXIT_TRANSLATED);
    assert!(
        outcome
            .config
            .contains("# persistence_timeout 600 -> source-hash: a client keeps its real server")
    );
    // Without a value keepalived's default (360 s) applies; 0 means no persistence.
    let (_, outcome) = import(&dr("  persistence_timeout", ""));
    assert!(
        outcome
            .config
            .contains("persistence_timeout 360 -> source-hash")
    );
    let (config, _) = import(&dr("  persistence_timeout 0", ""));
    assert_eq!(only_service(&config).scheduler, Scheduler::Maglev);
}

#[test]
fn tcp_check_timers_follow_keepalived_inheritance() {
    // delay_loop from the virtual server, connect_timeout from the real server, retry and
    // connect_port from the checker.
    let (config, outcome) = import(&dr(
        "  delay_loop 2.5",
        "    connect_timeout 1.5\n    TCP_CHECK {\n      retry 2\n      connect_port 8080\n    }",
    ));
    assert_eq!(
        outcome.exit_code(),
        EXIT_TRANSLATED,
        "{}",
        messages(&outcome)
    );
    assert_eq!(
        check_of(&config),
        HealthCheckConfig {
            kind: CheckKind::Tcp,
            port: Some(8080),
            interval_ms: 2500,
            timeout_ms: 1500,
            rise: 1,
            fall: 3,
            ..HealthCheckConfig::default()
        }
    );
}

#[test]
fn keepalived_defaults_apply_when_nothing_is_set() {
    let (config, _) = import(&dr("", "    TCP_CHECK {\n    }"));
    let check = check_of(&config);
    assert_eq!(
        (check.interval_ms, check.timeout_ms, check.fall, check.port),
        (60_000, 5_000, 2, None)
    );
}

#[test]
fn http_get_keeps_path_status_and_timers() {
    let (config, outcome) = import(&dr(
        "  delay_loop 3",
        "    HTTP_GET {\n      url {\n        path /healthz\n        status_code 204\n      }\n      connect_timeout 1\n      retry 2\n      delay_before_retry 1\n    }",
    ));
    assert_eq!(
        outcome.exit_code(),
        EXIT_TRANSLATED,
        "{}",
        messages(&outcome)
    );
    assert_eq!(
        check_of(&config),
        HealthCheckConfig {
            kind: CheckKind::Http,
            port: None,
            path: "/healthz".into(),
            expect_status: 204,
            interval_ms: 3000,
            timeout_ms: 1000,
            rise: 1,
            fall: 3,
            on_failure: OnFailure::Remove,
        }
    );
}

#[test]
fn http_status_ranges_and_digests_are_approximated() {
    let (config, outcome) = import(&dr(
        "",
        "    HTTP_GET {\n      url {\n path /\n status_code 200-299 503\n }\n      url {\n path /b\n digest 0123\n }\n    }",
    ));
    assert_eq!(check_of(&config).expect_status, 200);
    assert_eq!(outcome.exit_code(), EXIT_TRANSLATED);
    let m = messages(&outcome);
    assert!(
        m.contains("drlb expects one status: 200") && m.contains("a second url"),
        "{m}"
    );
    let (config, _) = import(&dr(
        "",
        "    HTTP_GET {\n      url {\n path /\n status_code 300-399\n }\n    }",
    ));
    assert_eq!(check_of(&config).expect_status, 300);
}

#[test]
fn ssl_smtp_and_dns_checks_become_tcp_checks_with_a_note() {
    for kind in ["SSL_GET", "SMTP_CHECK", "DNS_CHECK"] {
        let (config, outcome) = import(&dr(
            "  delay_loop 4",
            &format!("    {kind} {{\n      connect_port 444\n    }}"),
        ));
        let check = check_of(&config);
        assert_eq!(
            (check.kind, check.port, check.interval_ms),
            (CheckKind::Tcp, Some(444), 4000),
            "{kind}"
        );
        assert_eq!(outcome.exit_code(), EXIT_TRANSLATED, "{kind}");
        assert!(
            messages(&outcome).contains(&format!("note: {kind} -> a TCP connect check")),
            "{kind}: {}",
            messages(&outcome)
        );
        assert!(
            outcome
                .config
                .contains(&format!("# {kind} -> a TCP connect check"))
        );
    }
}

#[test]
fn checks_drlb_cannot_do_are_left_out_with_a_fallback() {
    for kind in [
        "MISC_CHECK",
        "PING_CHECK",
        "UDP_CHECK",
        "FILE_CHECK",
        "BFD_CHECK",
    ] {
        let (config, outcome) = import(&dr("", &format!("    {kind} {{\n    }}")));
        assert_eq!(outcome.exit_code(), EXIT_INCOMPLETE, "{kind}");
        assert_eq!(check_of(&config).kind, CheckKind::Tcp, "{kind}");
        let line = outcome.left_out().next().unwrap().to_string();
        assert!(
            line.starts_with("/etc/keepalived/keepalived.conf:")
                && line.contains(&format!("left out: {kind} of real_server 198.18.0.11")),
            "{line}"
        );
    }
    // A UDP service has no fallback: no checks.
    let text = dr("", "    UDP_CHECK {\n    }").replace("protocol TCP", "protocol UDP");
    let (config, _) = import(&text);
    assert_eq!(check_of(&config).kind, CheckKind::None);
}

#[test]
fn real_servers_without_checkers_are_not_checked() {
    let (config, outcome) = import(&dr("", ""));
    assert_eq!(check_of(&config).kind, CheckKind::None);
    assert!(outcome.config.contains("no checker in keepalived"));
}

#[test]
fn different_checks_per_real_server_are_reported() {
    let text = dr("", "    TCP_CHECK {\n    }").replacen("TCP_CHECK {", "HTTP_GET {", 1);
    let (config, outcome) = import(&text);
    assert_eq!(check_of(&config).kind, CheckKind::Http);
    assert!(
        messages(&outcome).contains("the health check of real_server 198.18.0.12"),
        "{}",
        messages(&outcome)
    );
    assert_eq!(outcome.exit_code(), EXIT_INCOMPLETE);
}

#[test]
fn inhibit_on_failure_drains_instead_of_removing() {
    let (config, outcome) = import(&dr("  inhibit_on_failure", "    TCP_CHECK {\n    }"));
    assert_eq!(
        outcome.exit_code(),
        EXIT_TRANSLATED,
        "{}",
        messages(&outcome)
    );
    assert_eq!(check_of(&config).on_failure, OnFailure::Drain);
    assert!(
        outcome
            .config
            .contains("# inhibit_on_failure -> on_failure = \"drain\"")
    );
    // Off at the real server overrides the virtual server.
    let (config, _) = import(&dr(
        "  inhibit_on_failure",
        "    inhibit_on_failure off\n    TCP_CHECK {\n    }",
    ));
    assert_eq!(check_of(&config).on_failure, OnFailure::Remove);
    // drlb drains or removes per service: real servers that differ are reported.
    let text = dr("", "    TCP_CHECK {\n    }").replacen(
        "real_server 198.18.0.12 80 {",
        "real_server 198.18.0.12 80 {\n    inhibit_on_failure",
        1,
    );
    let (config, outcome) = import(&text);
    assert_eq!(check_of(&config).on_failure, OnFailure::Remove);
    assert_eq!(outcome.exit_code(), EXIT_INCOMPLETE);
    // A service without checks has nothing to drain on.
    let (config, _) = import(&dr("  inhibit_on_failure", ""));
    assert_eq!(check_of(&config).kind, CheckKind::None);
}

#[test]
fn nat_and_tun_are_refused_unless_converted() {
    for kind in ["NAT", "TUN"] {
        let text = dr("", "").replace("lb_kind DR", &format!("lb_kind {kind}"));
        let (config, outcome) = import(&text);
        assert!(config.services.is_empty());
        assert_eq!(outcome.exit_code(), EXIT_INCOMPLETE);
        assert!(messages(&outcome).contains(&format!(
            "lb_kind {kind}: drlb forwards by direct routing (DR) only; pass --convert-to-dr"
        )));
        let (config, outcome) = import_with(
            &text,
            &Options {
                convert_to_dr: true,
                ..Options::default()
            },
        );
        assert_eq!(only_service(&config).backends.len(), 2);
        assert_eq!(
            outcome.exit_code(),
            EXIT_TRANSLATED,
            "{}",
            messages(&outcome)
        );
        assert!(outcome.config.contains(&format!(
            "# lb_kind {kind} converted to DR (--convert-to-dr): every real server needs the VIP on lo"
        )));
    }
    // keepalived's default method is NAT.
    let (config, _) = import(&dr("", "").replace("lb_kind DR", ""));
    assert!(config.services.is_empty());
}

#[test]
fn conversion_needs_every_real_server_on_the_virtual_port() {
    let text = dr("", "")
        .replace("lb_kind DR", "lb_kind NAT")
        .replace("198.18.0.12 80", "198.18.0.12 8080");
    let (config, outcome) = import_with(
        &text,
        &Options {
            convert_to_dr: true,
            ..Options::default()
        },
    );
    assert!(config.services.is_empty());
    let line = outcome.left_out().next().unwrap().to_string();
    assert!(
        line.contains("real server 198.18.0.12:8080 (/etc/keepalived/keepalived.conf:8) listens on another port"),
        "{line}"
    );
    assert!(
        line.starts_with("/etc/keepalived/keepalived.conf:1:"),
        "{line}"
    );
}

#[test]
fn what_has_no_equivalent_is_listed_with_its_line() {
    let (config, outcome) = import(&dr(
        "  sorry_server 198.18.0.99 80\n  quorum 2\n  ops",
        "    notify_down /bin/page-me\n    uthreshold 100",
    ));
    assert_eq!(only_service(&config).backends.len(), 2);
    assert_eq!(outcome.exit_code(), EXIT_INCOMPLETE);
    let m = messages(&outcome);
    for (line, what) in [
        (4, "sorry_server"),
        (5, "quorum"),
        (6, "one-packet scheduling"),
        (8, "notify_down"),
        (9, "uthreshold"),
    ] {
        assert!(
            m.contains(&format!("keepalived.conf:{line}: left out: ")) && m.contains(what),
            "{line} {what}: {m}"
        );
    }
}

#[test]
fn fwmark_and_sctp_services_are_left_out() {
    let text = "virtual_server fwmark 1 {\n lb_kind DR\n}\nvirtual_server 198.18.0.1 80 {\n lb_kind DR\n protocol SCTP\n}\n";
    let (config, outcome) = import(text);
    assert!(config.services.is_empty());
    let lines: Vec<u32> = outcome
        .left_out()
        .map(|d| d.at.as_ref().unwrap().line)
        .collect();
    assert_eq!(lines, [1, 6], "{}", messages(&outcome));
}

/// keepalived keeps one family per `virtual_ipaddress` block: a dual-stack instance lists the
/// other in `virtual_ipaddress_excluded`, which it adds and removes alike.
#[test]
fn a_dual_stack_vrrp_instance_holds_both_vips() {
    let text = "vrrp_instance VI_1 {\n interface eth0\n virtual_ipaddress {\n  198.18.0.100/32 dev eth0\n }\n virtual_ipaddress_excluded {\n  2001:2::100/128 dev eth0\n }\n}\nvirtual_server 198.18.0.100 80 {\n lb_kind DR\n protocol TCP\n real_server 198.18.0.11 80 {\n }\n}\nvirtual_server 2001:2::100 80 {\n lb_kind DR\n protocol TCP\n real_server 2001:2::11 80 {\n }\n}\n";
    let (config, outcome) = import(text);
    assert_eq!(config.services.len(), 2, "{}", outcome.config);
    assert_eq!(
        config.director.active_when,
        crate::config::ActiveWhen::VipAssigned,
        "{}",
        outcome.config
    );
    let m = messages(&outcome);
    assert!(!m.contains("is in no vrrp_instance"), "{m}");
}

#[test]
fn ipv6_virtual_and_real_servers_translate() {
    let text = "vrrp_instance VI_6 {\n virtual_ipaddress {\n  2001:2::100/64 dev eth0\n }\n}\nvirtual_server 2001:2::100 80 {\n lb_kind DR\n protocol TCP\n real_server 2001:2::11 80 {\n  weight 2\n }\n real_server 2001:2::12 80 {\n }\n real_server 198.18.0.13 80 {\n }\n}\n";
    let (config, outcome) = import(text);
    let service = only_service(&config);
    assert_eq!(
        service.vip,
        "2001:2::100".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(
        service
            .backends
            .iter()
            .map(|b| (b.address.to_string(), b.weight))
            .collect::<Vec<_>>(),
        [("2001:2::11".to_owned(), 2), ("2001:2::12".to_owned(), 1)]
    );
    // The IPv4 real server of an IPv6 service is left out, with why.
    let m = messages(&outcome);
    assert!(m.contains("198.18.0.13") && m.contains("family"), "{m}");
    // The VIP keepalived's VRRP instance holds: vip-assigned, as for IPv4.
    assert_eq!(
        config.director.active_when,
        crate::config::ActiveWhen::VipAssigned,
        "{}",
        outcome.config
    );
}

#[test]
fn groups_expand_to_one_service_per_address() {
    let text = "virtual_server_group WEB {\n 198.18.0.100-102 80\n 198.18.1.0/31 80\n fwmark 3\n}\nvirtual_server group WEB {\n lb_kind DR\n real_server 198.18.0.11 80 {\n }\n}\n";
    let (config, outcome) = import(text);
    let vips: Vec<String> = config.services.iter().map(|s| s.vip.to_string()).collect();
    assert_eq!(
        vips,
        [
            "198.18.0.100",
            "198.18.0.101",
            "198.18.0.102",
            "198.18.1.0",
            "198.18.1.1"
        ]
    );
    assert_eq!(outcome.left_out().count(), 1);
    assert!(
        messages(&outcome)
            .contains("keepalived.conf:4: left out: `virtual_server group WEB` member `fwmark 3`")
    );
}

#[test]
fn duplicate_services_keep_the_first() {
    let text = format!("{}{}", dr("", ""), dr("  lb_algo sh", ""));
    let (config, outcome) = import(&text);
    assert_eq!(only_service(&config).scheduler, Scheduler::Maglev);
    assert!(messages(&outcome).contains("is already defined at /etc/keepalived/keepalived.conf:1"));
}

#[test]
fn the_director_interface_comes_from_vrrp_or_the_option() {
    let vrrp =
        "vrrp_instance VI_1 {\n  interface eth7\n  virtual_ipaddress {\n 198.18.0.100\n }\n}\n";
    let (config, outcome) = import(&format!("{vrrp}{}", dr("", "")));
    assert_eq!(config.director.interface_names(), ["eth7"]);
    assert!(
        outcome.config.contains(
            "the interface of the first vrrp_instance (/etc/keepalived/keepalived.conf:2)"
        )
    );
    let (config, _) = import_with(
        &format!("{vrrp}{}", dr("", "")),
        &Options {
            interface: Some("ens3".into()),
            ..Options::default()
        },
    );
    assert_eq!(config.director.interface_names(), ["ens3"]);
    let (config, outcome) = import(&dr("", ""));
    assert_eq!(config.director.interface_names(), ["eth0"]);
    assert!(outcome.config.contains("SET THIS"));
}

#[test]
fn conditional_services_need_a_config_id() {
    let text = format!("@main {}", dr("", ""));
    let (config, outcome) = import(&text);
    assert!(config.services.is_empty());
    assert!(
        messages(&outcome).contains("depends on keepalived's config id (@main): pass --config-id")
    );
    let with = |id: &str| {
        import_with(
            &text,
            &Options {
                config_id: Some(id.into()),
                ..Options::default()
            },
        )
        .0
        .services
        .len()
    };
    assert_eq!((with("main"), with("backup")), (1, 0));
}

#[test]
fn includes_bring_their_services() {
    let source = MemSource::new(&[
        ("/etc/keepalived/keepalived.conf", "include conf.d/*.conf\n"),
        ("/etc/keepalived/conf.d/web.conf", &dr("", "")),
    ]);
    let outcome = keepalived(
        Path::new("/etc/keepalived/keepalived.conf"),
        &source,
        &Options::default(),
    )
    .unwrap();
    assert_eq!(Config::parse(&outcome.config).unwrap().services.len(), 1);
    assert!(
        outcome
            .config
            .contains("(/etc/keepalived/conf.d/web.conf:1)")
    );
}

#[test]
fn ipvsadm_save_output_translates() {
    let text = "-A -t 198.18.0.100:80 -s wrr\n-a -t 198.18.0.100:80 -r 198.18.0.11:80 -g -w 2\n-a -t 198.18.0.100:80 -r 198.18.0.12:80 -g -w 0\n-A -u 198.18.0.100:53 -s sh -p 300\n-a -u 198.18.0.100:53 -r 198.18.0.11:53 -g -w 1\n";
    let outcome = ipvsadm(text, "<stdin>", &Options::default());
    assert_eq!(
        outcome.exit_code(),
        EXIT_TRANSLATED,
        "{}",
        messages(&outcome)
    );
    let config = Config::parse(&outcome.config).unwrap();
    assert_eq!(config.services.len(), 2);
    let web = &config.services[0];
    assert_eq!(
        web.backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
        [2, 0]
    );
    assert_eq!(web.health_check.as_ref().unwrap().kind, CheckKind::None);
    assert_eq!(config.services[1].protocol, Protocol::Udp);
    assert_eq!(config.services[1].scheduler, Scheduler::SourceHash);
    assert!(
        outcome
            .config
            .contains("# -a -t 198.18.0.100:80 -r 198.18.0.11:80 -g -w 2 (<stdin>:2)")
    );
}

/// `ipvsadm-save -n` writes IPv6 services and real servers as `[address]:port`.
#[test]
fn ipvsadm_ipv6_services_translate() {
    let text = "-A -t [2001:2::100]:80 -s mh\n-a -t [2001:2::100]:80 -r [2001:2::11]:80 -g -w 1\n-a -t [2001:2::100]:80 -r [2001:2::12]:80 -g -w 3\n-a -t [2001:2::100]:80 -r 198.18.0.11:80 -g -w 1\n";
    let outcome = ipvsadm(text, "<stdin>", &Options::default());
    let config = Config::parse(&outcome.config).unwrap();
    let service = only_service(&config);
    assert_eq!(
        (service.vip.to_string(), service.port, service.protocol),
        ("2001:2::100".to_owned(), 80, Protocol::Tcp)
    );
    assert_eq!(
        service
            .backends
            .iter()
            .map(|b| (b.address.to_string(), b.weight))
            .collect::<Vec<_>>(),
        [("2001:2::11".to_owned(), 1), ("2001:2::12".to_owned(), 3)]
    );
    let lines: Vec<u32> = outcome
        .left_out()
        .map(|d| d.at.as_ref().unwrap().line)
        .collect();
    assert_eq!(lines, [4], "{}", messages(&outcome));
}

#[test]
fn ipvsadm_masquerading_names_and_unknown_lines_are_reported() {
    let text = "-A -t 198.18.0.100:80 -s rr\n-a -t 198.18.0.100:80 -r 198.18.0.11:8080 -m -w 1\n-A -t www.example.com:http -s rr\n-A -f 1 -s rr\n-C\n-a -t 198.18.0.200:80 -r 198.18.0.11:80 -g -w 1\n";
    let outcome = ipvsadm(text, "rules", &Options::default());
    assert_eq!(outcome.exit_code(), EXIT_INCOMPLETE);
    let lines: Vec<u32> = outcome
        .left_out()
        .map(|d| d.at.as_ref().unwrap().line)
        .collect();
    assert_eq!(lines, [3, 4, 5, 6, 1], "{}", messages(&outcome));
    let m = messages(&outcome);
    assert!(
        m.contains("save with `ipvsadm-save -n`") && m.contains("no -A line before it"),
        "{m}"
    );
    // Converted, the port mapping still stops it.
    let converted = ipvsadm(
        text,
        "rules",
        &Options {
            convert_to_dr: true,
            ..Options::default()
        },
    );
    assert!(messages(&converted).contains("listens on another port"));
    assert!(
        Config::parse(&converted.config)
            .unwrap()
            .services
            .is_empty()
    );
}

#[test]
fn huge_timers_still_give_a_valid_config() {
    let (config, _) = import(&dr(
        "  delay_loop 1e30",
        "    TCP_CHECK {\n connect_timeout 1e300\n retry 4294967295\n }",
    ));
    let check = check_of(&config);
    assert_eq!(check.interval_ms, check.timeout_ms);
    assert_eq!(check.fall, u32::MAX);
}

proptest! {
    /// Whatever the text, the importer does not panic and prints a config drlb accepts.
    #[test]
    fn any_keepalived_text_imports_to_a_valid_config(
        text in "([a-zA-Z_0-9. {}\"!#@$=-]|\n|virtual_server |real_server |198\\.18\\.0\\.1 |80 |lb_kind DR\n|TCP_CHECK |HTTP_GET |url |weight ){0,120}"
    ) {
        let source = MemSource::new(&[("/k.conf", &text)]);
        let outcome = keepalived(Path::new("/k.conf"), &source, &Options::default()).unwrap();
        prop_assert!(Config::parse(&outcome.config).is_ok(), "{}", outcome.config);
    }

    #[test]
    fn any_ipvsadm_text_imports_to_a_valid_config(
        text in "([-a-z0-9:. ]|\n|-A -t |-a -t |-r |198\\.18\\.0\\.1[0-9]:80 |-g |-m |-w |-s sh |-p ){0,80}"
    ) {
        let outcome = ipvsadm(&text, "fuzz", &Options::default());
        prop_assert!(Config::parse(&outcome.config).is_ok(), "{}", outcome.config);
    }
}

#[test]
fn vrrp_held_vips_make_drlb_follow_the_address() {
    let vrrp = "vrrp_instance VI_1 {\n  interface eth0\n  virtual_ipaddress {\n    198.18.0.100/32 dev eth0\n  }\n}\n";
    let (config, outcome) = import(&format!("{vrrp}{}", dr("", "")));
    assert_eq!(
        config.director.active_when,
        crate::config::ActiveWhen::VipAssigned
    );
    assert!(
        outcome
            .config
            .contains("vrrp_instance VI_1 (/etc/keepalived/keepalived.conf:1) holds 198.18.0.100")
    );
    // A VIP VRRP does not hold would never be active: said so.
    let other = dr("", "").replace("198.18.0.100 80", "198.18.0.101 80");
    let (_, outcome) = import(&format!("{vrrp}{}{other}", dr("", "")));
    assert!(
        messages(&outcome).contains("VIP 198.18.0.101 is in no vrrp_instance's virtual_ipaddress")
    );
    // No VRRP address among the VIPs: drlb's default stays.
    let (config, _) = import(&dr("", ""));
    assert_eq!(
        config.director.active_when,
        crate::config::ActiveWhen::Always
    );
}
