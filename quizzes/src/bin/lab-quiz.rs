//! `lab-quiz`: the chapters' quizzes in the terminal (run as `lab quiz`, which hands its
//! arguments to this program; see the `quizzes` crate's `quiz_session`).
//!
//! ```text
//! lab quiz [CHAPTER] [--seed S] [--answers FILE] [--progress]
//! ```
//!
//! Without a chapter it asks every chapter in order. Answers come from the terminal, from a
//! pipe, or one per line from `--answers FILE`. `--seed S` replays a quiz exactly (the seed is
//! printed at the start). `--progress` prints the self-assessment table and exits.

use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;

use quizzes::progress::{progress_path, Progress};
use quizzes::quiz_session::{chapter_name, find_chapter, run_chapter, Summary};
use quizzes::template::Rng;

const USAGE: &str = "usage: lab quiz [CHAPTER] [--seed S] [--answers FILE] [--progress]";

struct Options {
    chapter: Option<String>,
    seed: Option<u64>,
    answers: Option<String>,
    progress: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        chapter: None,
        seed: None,
        answers: None,
        progress: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--seed" => {
                let v = value("--seed")?;
                o.seed =
                    Some(v.parse().map_err(|_| {
                        format!("--seed must be a non-negative integer, got `{v}`")
                    })?);
            }
            "--answers" => o.answers = Some(value("--answers")?),
            "--progress" => o.progress = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            s if s.starts_with('-') => return Err(format!("unknown option `{s}`\n{USAGE}")),
            s if o.chapter.is_none() => o.chapter = Some(s.to_string()),
            s => return Err(format!("one chapter at a time, got `{s}` too\n{USAGE}")),
        }
    }
    Ok(o)
}

fn run(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let mut stdout = std::io::stdout();
    let base = Progress::load()?;
    if o.progress {
        write!(stdout, "{}", base.table()).map_err(|e| e.to_string())?;
        println!("(kept in {})", progress_path()?.display());
        return Ok(());
    }
    let files = match &o.chapter {
        Some(c) => vec![find_chapter(c)?],
        None => quizzes::quiz_files(),
    };
    let seed = o.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64 % 1_000_000)
    });
    println!("seed {seed} (replay this quiz with --seed {seed})");
    let mut input: Box<dyn BufRead> = match &o.answers {
        Some(path) => Box::new(BufReader::new(
            std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?,
        )),
        None => Box::new(BufReader::new(std::io::stdin())),
    };
    let mut rng = Rng::new(seed);
    let mut summary = Summary::default();
    let mut progress = base;
    for file in &files {
        run_chapter(
            file,
            &mut rng,
            &mut input,
            &mut stdout,
            &mut summary,
            &progress,
            true,
        )?;
        let chapter = chapter_name(file);
        if let Some(scores) = summary.scores.get(&chapter) {
            progress = progress.with_session(&chapter, scores);
        }
        if summary.stopped_early {
            break;
        }
    }
    let (right, asked) = summary.right_and_asked();
    println!("\n{right} of {asked} right. `lab quiz --progress` shows your table.");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab quiz: {e}");
            ExitCode::from(2)
        }
    }
}
