use super::*;

fn spec(text: &str) -> Result<Vec<OverlaySpec>, ConfigError> {
    parse_spec(&Source::from_str("spec.toml", text))
}

const FULL: &str = r#"
[vcluster.ml-training.sysctl]
"vm.nr_hugepages" = "1024"
"kernel.numa_balancing" = 0

[vcluster.ml-training.modules]
load = ["nvidia", "cxi"]

[vcluster.ml-training.mounts]
"/local-scratch" = { type = "nfs", source = "storage03:/scratch" }

[vcluster.ml-training.files]
"/etc/motd" = { content = "welcome\n", mode = "0640" }

[vcluster.ml-training.network]
ib0 = { mtu = 65520 }

[vcluster.ml-training.packages]
cuda = "12.4"

[vcluster.ml-training.services.chronyd]
binary = "/usr/sbin/chronyd"
order = 10

[vcluster.ml-training.policy]
drift_sensitivity = 5.0
two_person_approval = true
"#;

#[test]
fn full_spec_parses_and_round_trips_canonically() {
    let specs = spec(FULL).unwrap();
    assert_eq!(specs.len(), 1);
    let s = &specs[0];
    assert_eq!(s.vcluster, "ml-training");
    assert_eq!(s.set.sysctl["kernel.numa_balancing"], "0");
    assert_eq!(s.set.modules.load, ["nvidia", "cxi"]);
    assert_eq!(s.set.mounts["/local-scratch"].fstype, "nfs");
    assert_eq!(s.set.files["/etc/motd"].owner, "root");
    assert!(s.set.services.contains_key("chronyd"));
    assert!(s.set.policy.as_ref().unwrap().two_person_approval);
    let mut o = Overlay::default();
    o.merge(s);
    let text = o.to_toml("ml-training");
    let (name, back) = Overlay::from_toml(&text).unwrap();
    assert_eq!(name, "ml-training");
    assert_eq!(back, o);
    // Canonical: the same overlay always gives the same bytes.
    assert_eq!(back.to_toml("ml-training"), text);
    // And what was written is a valid spec again.
    assert_eq!(spec(&text).unwrap()[0].set, o);
}

#[test]
fn merge_sets_and_removes() {
    let mut o = Overlay::default();
    o.merge(&spec(FULL).unwrap()[0]);
    let change = spec(
        r#"
[vcluster.ml-training.sysctl]
"vm.nr_hugepages" = "2048"
[vcluster.ml-training.remove]
keys = ["sysctl.kernel.numa_balancing", "services.chronyd", "modules.cxi"]
"#,
    )
    .unwrap();
    o.merge(&change[0]);
    assert_eq!(o.sysctl.len(), 1);
    assert_eq!(o.sysctl["vm.nr_hugepages"], "2048");
    assert!(o.services.is_empty());
    assert_eq!(o.modules.load, ["nvidia"]);
    assert!(o.mounts.contains_key("/local-scratch"));
}

#[test]
fn errors_name_line_and_key() {
    let cases = [
        ("[vcluster.v.sysctl]\n\"../x\" = 1\n", "bad sysctl key", 2),
        (
            "[vcluster.v.mounts]\n\"rel/path\" = { type = \"nfs\", source = \"s:/x\" }\n",
            "absolute path",
            2,
        ),
        (
            "[vcluster.v.files]\n\"/etc/x\" = { content = \"\", mode = \"999\" }\n",
            "octal mode",
            2,
        ),
        (
            "[vcluster.v.files.\"/etc/y\"]\ncontent = \"a\"\n\nmode = \"0999\"\n",
            "octal mode",
            4,
        ),
        (
            "[vcluster.v.services.a]\nbinary = \"/x\"\ncgroup_memory_max = \"64Q\"\n",
            "unknown unit",
            3,
        ),
        (
            "[vcluster.v.policy]\nbogus = 1\n",
            "unknown field `bogus`",
            2,
        ),
        (
            "[vcluster.v.remove]\nkeys = [\"nonsense.x\"]\n",
            "does not name a section",
            2,
        ),
        ("[vcluster.v.frobs]\nx = 1\n", "unknown field `frobs`", 1),
        (
            "[vcluster.v.sysctl]\n\"a.b\" = 1\n\n[vcluster.v.modules]\n\nload = [\"a/b\"]\n",
            "bad module name",
            6,
        ),
    ];
    for (text, want, line) in cases {
        let e = spec(text).unwrap_err();
        assert!(e.message.contains(want), "{text}: {e}");
        assert_eq!(e.line, Some(line), "{text}: {e}");
    }
    assert!(spec("").unwrap_err().message.contains("no [vcluster"));
}
