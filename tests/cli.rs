//! Every example's flags, through the clap structs in `src/` that the examples' `main`s
//! parse with (examples are not binaries a test can run).

use clap::error::ErrorKind;
use clap::Parser;
use convnet::bench::BenchOptions;
use convnet::book::{channels, cross_correlation, padding_stride, pooling};
use convnet::lenet::LenetArgs;

/// `--help` and `--version` print and exit 0; unknown flags and stray arguments are usage
/// errors (exit 2) naming what was wrong; no arguments parse.
fn behaves_like_a_command_line<P: Parser + std::fmt::Debug>(name: &str) {
    P::command().debug_assert();
    for help in ["--help", "-h"] {
        let e = P::try_parse_from([name, help]).unwrap_err();
        assert_eq!((e.kind(), e.exit_code()), (ErrorKind::DisplayHelp, 0), "{name} {help}");
        assert!(e.to_string().contains(&format!("Usage: {name}")), "{name} {help}: {e}");
    }
    let e = P::try_parse_from([name, "--version"]).unwrap_err();
    assert_eq!((e.kind(), e.exit_code()), (ErrorKind::DisplayVersion, 0), "{name} --version");
    assert_eq!(e.to_string(), format!("{name} {}\n", env!("CARGO_PKG_VERSION")));
    let e = P::try_parse_from([name, "--bogus-flag", "7"]).unwrap_err();
    assert_eq!((e.kind(), e.exit_code()), (ErrorKind::UnknownArgument, 2), "{name}: {e}");
    assert!(e.to_string().contains("'--bogus-flag'"), "{name}: {e}");
    let e = P::try_parse_from([name, "7"]).unwrap_err();
    assert_eq!((e.kind(), e.exit_code()), (ErrorKind::UnknownArgument, 2), "{name}: {e}");
    P::try_parse_from([name]).unwrap();
}

#[test]
fn every_example_has_help_version_and_usage_errors() {
    behaves_like_a_command_line::<LenetArgs>("lenet");
    behaves_like_a_command_line::<BenchOptions>("bench");
    behaves_like_a_command_line::<cross_correlation::Args>("cross_correlation");
    behaves_like_a_command_line::<padding_stride::Args>("padding_stride");
    behaves_like_a_command_line::<channels::Args>("channels");
    behaves_like_a_command_line::<pooling::Args>("pooling");
    behaves_like_a_command_line::<convnet::basics::Args>("autograd_basics");
}

/// A usage error (exit 2) whose message names each of `named`.
fn usage_error<P: Parser + std::fmt::Debug>(argv: &[&str], named: &[&str]) {
    let e = P::try_parse_from(argv).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.exit_code(), 2, "{argv:?}: {msg}");
    assert!(matches!(e.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue), "{argv:?}: {msg}");
    for n in named {
        assert!(msg.contains(n), "{argv:?}: '{n}' missing from {msg}");
    }
}

#[test]
fn bench_flags() {
    let o = BenchOptions::try_parse_from(["bench"]).unwrap();
    assert_eq!((o.threads, o.only, o.reps, o.quick), (None, None, 5, false));
    let o = BenchOptions::try_parse_from(["bench", "--threads", "2", "--only", "conv1", "--reps", "3", "--quick"]).unwrap();
    assert_eq!((o.threads, o.only.as_deref(), o.reps, o.quick), (Some(2), Some("conv1"), 3, true));
    usage_error::<BenchOptions>(&["bench", "--threads", "0"], &["--threads", "1 to 1024"]);
    usage_error::<BenchOptions>(&["bench", "--threads", "5000"], &["--threads", "'5000'"]);
    usage_error::<BenchOptions>(&["bench", "--threads", "two"], &["--threads", "'two'"]);
    usage_error::<BenchOptions>(&["bench", "--reps", "0"], &["--reps", ">= 1"]);
    usage_error::<BenchOptions>(&["bench", "--reps", "-1"], &["--reps", "'-1'"]);
    usage_error::<BenchOptions>(&["bench", "--only"], &["--only"]);
}

#[test]
fn cross_correlation_flags() {
    assert_eq!(cross_correlation::Args::try_parse_from(["cross_correlation"]).unwrap().epochs, 10);
    assert_eq!(cross_correlation::Args::try_parse_from(["cross_correlation", "--epochs", "3"]).unwrap().epochs, 3);
    usage_error::<cross_correlation::Args>(&["cross_correlation", "--epochs", "-1"], &["--epochs", "'-1'"]);
    usage_error::<cross_correlation::Args>(&["cross_correlation", "--epochs", "many"], &["--epochs", "'many'"]);
}

#[test]
fn lenet_bad_values_through_the_struct() {
    for (argv, named) in [
        (&["lenet", "--lr", "-1"][..], &["--lr", "'-1'"][..]),
        (&["lenet", "--threads", "0"], &["--threads", "'0'"]),
        (&["lenet", "--threads", "5000"], &["--threads", "'5000'"]),
        (&["lenet", "--pool", "sum"], &["--pool", "'sum'"]),
        (&["lenet", "--test-limit", "0"], &["--test-limit", "'0'"]),
        (&["lenet", "--seed", "1.5"], &["--seed", "'1.5'"]),
        (&["lenet", "--seed", "9007199254740993"], &["--seed", "0 to 9007199254740992"]),
    ] {
        usage_error::<LenetArgs>(argv, named);
    }
}
