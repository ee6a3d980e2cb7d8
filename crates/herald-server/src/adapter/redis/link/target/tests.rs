use super::*;

fn nodes(list: &[(&str, u16)]) -> Vec<Node> {
    list.iter().map(|&(h, p)| node(h, p)).collect()
}

#[test]
fn single_servers_are_read_by_the_client_as_before() {
    let Ok(Target::Single(info)) = Target::parse("redis://:s3cret@10.0.0.5:6380/2") else {
        panic!("a single server");
    };
    assert_eq!(info.addr, ConnectionAddr::Tcp("10.0.0.5".into(), 6380));
    assert_eq!(
        (info.redis.db, info.redis.password.as_deref()),
        (2, Some("s3cret"))
    );
    let target = Target::parse("unix:///run/redis.sock?db=3").expect("a socket");
    assert_eq!(target.db(), 3);
    assert!(matches!(
        Target::parse("redis://"),
        Err(TargetError::Single(_))
    ));
}

#[test]
fn cluster_seeds_take_credentials_and_default_ports() {
    let target =
        Target::parse("redis+cluster://app:p%40ss@h1:7000,h2,[::1]:7002/").expect("a cluster");
    let Target::Cluster(seeds) = &target else {
        panic!("a cluster");
    };
    assert_eq!(
        seeds.nodes,
        nodes(&[("h1", 7000), ("h2", 6379), ("::1", 7002)])
    );
    assert_eq!(seeds.auth.username.as_deref(), Some("app"));
    assert_eq!(seeds.auth.password.as_deref(), Some("p@ss"));
    assert!(!seeds.tls);
    assert_eq!(target.db(), 0);
    assert!(Target::parse("redis+cluster://h1/0").is_ok());
}

#[test]
fn sentinel_urls_name_the_master_and_may_carry_the_sentinels_password() {
    let target = Target::parse(
        "redis+sentinel://:master-pw@s1,s2:26380/mymaster/4?sentinel_password=s%20pw",
    )
    .expect("a sentinel set-up");
    let Target::Sentinel(seeds) = &target else {
        panic!("sentinels");
    };
    assert_eq!(seeds.sentinels, nodes(&[("s1", 26379), ("s2", 26380)]));
    assert_eq!(seeds.master, "mymaster");
    assert_eq!(seeds.db, 4);
    assert_eq!(seeds.auth.password.as_deref(), Some("master-pw"));
    assert_eq!(seeds.auth.username, None);
    assert_eq!(seeds.sentinel_auth.password.as_deref(), Some("s pw"));
    let Ok(Target::Sentinel(plain)) = Target::parse("redis+sentinel://s1/m") else {
        panic!("sentinels");
    };
    assert_eq!((plain.db, plain.sentinel_auth), (0, Auth::default()));
}

#[test]
fn mistakes_are_named() {
    let cases: &[(&str, TargetError)] = &[
        ("localhost:6379", TargetError::NoScheme),
        ("http://h", TargetError::UnknownScheme("http".into())),
        ("redis+cluster://", TargetError::NoHosts),
        ("redis+cluster://:pw@", TargetError::NoHosts),
        (
            "redis+cluster://h1:70000",
            TargetError::BadNode {
                node: "h1:70000".into(),
                reason: "the port is not a number from 1 to 65535",
            },
        ),
        (
            "redis+cluster://[::1:7000",
            TargetError::BadNode {
                node: "[::1:7000".into(),
                reason: "an IPv6 address needs its closing ']'",
            },
        ),
        ("redis+cluster://h1/3", TargetError::ClusterDb("3".into())),
        (
            "redis+cluster://h1?x=1",
            TargetError::UnknownParameter("x".into()),
        ),
        ("redis+sentinel://s1", TargetError::NoMasterName),
        ("redis+sentinel://s1/", TargetError::NoMasterName),
        ("redis+sentinel://s1/m/x", TargetError::BadDb("x".into())),
        ("redis+sentinel://s1/m/-1", TargetError::BadDb("-1".into())),
        (
            "redis+sentinel://s1/m/0/extra",
            TargetError::ExtraPath("extra".into()),
        ),
        (
            "redis+sentinel://s1/m?sentinel_pass=x",
            TargetError::UnknownParameter("sentinel_pass".into()),
        ),
        (
            "redis+sentinel://:%zz@s1/m",
            TargetError::BadEncoding("password"),
        ),
    ];
    for (url, expected) in cases {
        assert_eq!(Target::parse(url).err().as_ref(), Some(expected), "{url}");
    }
}

#[test]
fn tls_schemes_follow_what_the_client_was_built_with() {
    let client_has_tls = Target::parse("rediss://h:6380/0").is_ok();
    for url in ["rediss+cluster://h1:7000", "rediss+sentinel://s1/m"] {
        match Target::parse(url) {
            Ok(Target::Cluster(Seeds { tls, .. }))
            | Ok(Target::Sentinel(SentinelSeeds { tls, .. })) => {
                assert!(client_has_tls && tls, "{url}");
            }
            Err(TargetError::NoTls) => assert!(!client_has_tls, "{url}"),
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[test]
fn the_sentinels_tls_is_set_apart_and_insecure_is_refused() {
    let Ok(Target::Sentinel(both)) = Target::parse("rediss+sentinel://s1/m") else {
        panic!("sentinels");
    };
    assert!(both.tls && both.sentinel_tls);
    let target = Target::parse("rediss+sentinel://s1/m?sentinel_tls=false").expect("valid");
    let Target::Sentinel(plain) = &target else {
        panic!("sentinels");
    };
    assert!(plain.tls && !plain.sentinel_tls);
    assert_eq!(
        target.to_string(),
        "rediss+sentinel://s1:26379/m/0?sentinel_tls=false"
    );
    let Ok(Target::Sentinel(only)) = Target::parse("redis+sentinel://s1/m?sentinel_tls=true")
    else {
        panic!("sentinels");
    };
    assert!(!only.tls && only.sentinel_tls);
    assert_eq!(
        Target::parse("redis+sentinel://s1/m?sentinel_tls=yes").err(),
        Some(TargetError::BadSentinelTls("yes".into()))
    );
    assert_eq!(
        Target::parse("rediss://h:6380/0#insecure").err(),
        Some(TargetError::Insecure)
    );
}

#[test]
fn passwords_never_show() {
    for url in [
        "redis://user:hunter2@h:6379/1",
        "redis+cluster://user:hunter2@h1:7000,h2:7001",
        "redis+sentinel://:hunter2@s1/m/2?sentinel_username=sen&sentinel_password=hunter2",
    ] {
        let target = Target::parse(url).expect(url);
        let shown = format!("{target} {target:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains(HIDDEN), "{shown}");
    }
    for bad in [
        "redis://user:hunter2@h:99999/1",
        "redis+cluster://user:hunter2@h1:0",
        "redis+sentinel://:hunter2@s1:x/m",
    ] {
        let error = Target::parse(bad).expect_err(bad);
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
    let shown = Target::parse("redis+sentinel://:pw@s1:1,[::1]:2/m/2?sentinel_username=sen")
        .expect("sentinels")
        .to_string();
    assert_eq!(
        shown,
        format!("redis+sentinel://:{HIDDEN}@s1:1,[::1]:2/m/2?sentinel_username=sen")
    );
}
