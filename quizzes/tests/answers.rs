//! Every quiz answer is what the engine computes; a wrong answer fails naming its question.

use quizzes::{
    check_file, check_question, format_number, load_quiz, parse_number, quiz_files, QuizFile,
};

fn all_quizzes() -> Vec<QuizFile> {
    let files = quiz_files();
    assert!(!files.is_empty(), "no quiz files found");
    files
        .iter()
        .map(|p| load_quiz(p).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

#[test]
fn every_numeric_answer_matches_the_engine() {
    let failures: Vec<String> = all_quizzes().iter().flat_map(check_file).collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_numeric_short_answer_names_what_computes_it() {
    for quiz in all_quizzes() {
        for q in &quiz.questions {
            let numeric = match q.kind.as_str() {
                "ShortAnswer" => parse_number(&q.answer).is_some(),
                // A choice that is just a number ("4") is computed too, e.g. a greedy tie.
                "MultipleChoice" => q.answer.trim().parse::<f64>().is_ok(),
                _ => false,
            };
            if numeric {
                assert!(
                    q.check.is_some(),
                    "{} {} has a numeric answer but no `check`",
                    quiz.path.display(),
                    q.label()
                );
            }
        }
    }
}

/// The stage 3 greedy-tie question: ids 17 and 4 share the largest logit, and the engine's
/// `argmax` decides. Swapping the answer with the distractor "17" must fail, and so must a
/// distractor equal to the engine's answer.
#[test]
fn the_greedy_tie_question_is_decided_by_the_engines_argmax() {
    let quiz = all_quizzes()
        .into_iter()
        .find(|q| q.path.ends_with("stage3.toml"))
        .expect("stage3.toml");
    let q = quiz
        .questions
        .iter()
        .find(|q| q.kind == "MultipleChoice" && q.prompt.contains("17 and 4"))
        .expect("the greedy-tie question");
    let check = q
        .check
        .as_ref()
        .expect("the greedy-tie question has a check");
    assert_eq!(check.function, "argmax");
    assert_eq!(check_question(&quiz.path, q), Ok(()));
    let mut swapped = q.clone();
    swapped.answer = "17".into();
    swapped.distractors = q
        .distractors
        .iter()
        .map(|d| if d == "17" { "4".into() } else { d.clone() })
        .collect();
    let err = check_question(&quiz.path, &swapped).expect_err("17 accepted as the answer");
    assert!(err.contains("the engine's argmax gives \"4\""), "{err}");
    let mut both = q.clone();
    both.distractors.push("4".into());
    let err = check_question(&quiz.path, &both).expect_err("a distractor 4 accepted");
    assert!(err.contains("distractor \"4\""), "{err}");
}

/// Words of `text` outside code spans with an underscore between two letters or digits.
fn bare_underscores(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    // Odd-numbered pieces between backticks are code spans.
    for piece in text.split('`').step_by(2) {
        for word in piece.split_whitespace() {
            let b = word.as_bytes();
            if (1..b.len().saturating_sub(1)).any(|k| {
                b[k] == b'_' && b[k - 1].is_ascii_alphanumeric() && b[k + 1].is_ascii_alphanumeric()
            }) {
                found.push(word.to_string());
            }
        }
    }
    found
}

#[test]
fn bare_underscores_are_found_outside_code_spans_only() {
    assert_eq!(
        bare_underscores("2 · layers · kv_heads · `head_dim` · bytes"),
        ["kv_heads"]
    );
    assert!(bare_underscores("`max_model_len` = min(4096, 1600), _emphasis_ meant").is_empty());
}

/// mdbook-quiz renders Markdown, where `a_b_c` turns `b` into italics: an identifier with an
/// underscore must be in backticks.
#[test]
fn identifiers_with_underscores_are_in_backticks() {
    let mut found = Vec::new();
    for path in quiz_files() {
        let table: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (i, q) in table["questions"].as_array().unwrap().iter().enumerate() {
            let mut texts = Vec::new();
            collect_strings(q, &mut texts);
            for word in texts.iter().flat_map(|t| bare_underscores(t)) {
                found.push(format!("{} question {}: {word}", path.display(), i + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "put these in backticks:\n{}",
        found.join("\n")
    );
}

/// Every string a question shows (prompt, answer, distractors, context), not its `check`/`id`.
fn collect_strings(v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::String(s) => out.push(s.clone()),
        toml::Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        toml::Value::Table(t) => t
            .iter()
            // A `template`'s text is not shown by mdbook-quiz: the book shows it rendered with
            // the book's numbers, which is the question's own prompt (tests/templates.rs).
            .filter(|(k, _)| !matches!(k.as_str(), "check" | "id" | "type" | "template"))
            .for_each(|(_, v)| collect_strings(v, out)),
        _ => {}
    }
}

#[test]
fn the_quizzes_cover_the_curriculum() {
    let quizzes = all_quizzes();
    let total: usize = quizzes.iter().map(|q| q.questions.len()).sum();
    let checked: usize = quizzes
        .iter()
        .flat_map(|q| &q.questions)
        .filter(|q| q.check.is_some())
        .count();
    assert!(total >= 10, "only {total} questions");
    assert!(checked >= 10, "only {checked} questions are checked");
    for name in [
        "stage1.toml",
        "stage2.toml",
        "stage3.toml",
        "stage4.toml",
        "stage5.toml",
    ] {
        assert!(
            quizzes
                .iter()
                .any(|q| q.path.file_name().unwrap() == name && q.questions.len() >= 5),
            "{name} is missing or has fewer than 5 questions"
        );
    }
}

/// mdbook-quiz writes an `id` into each question when the book is built; the ids are committed,
/// so a question added without rebuilding the book shows up here.
#[test]
fn every_question_has_a_unique_id_written_by_the_book_build() {
    let mut seen = std::collections::HashSet::new();
    for path in quiz_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        for (i, q) in table["questions"].as_array().unwrap().iter().enumerate() {
            let id = q.get("id").and_then(|v| v.as_str()).unwrap_or_else(|| {
                panic!(
                    "{} question {}: no id; run `mdbook build book` and commit the quiz file",
                    path.display(),
                    i + 1
                )
            });
            assert!(seen.insert(id.to_string()), "duplicate id {id}");
        }
    }
}

/// The checker must notice an answer that is off by one unit of its last digit, and say which
/// question. Each numeric answer is changed in memory, in turn, and must be rejected.
#[test]
fn an_answer_off_by_one_unit_fails_naming_its_question() {
    let mut mutated = 0;
    for quiz in all_quizzes() {
        for q in &quiz.questions {
            let Some(check) = &q.check else { continue };
            let value = parse_number(&q.answer).expect("checked answers are numbers");
            let unit = 10f64.powi(-(check.decimals as i32));
            for delta in [unit, -unit] {
                let mut wrong = q.clone();
                wrong.answer = format_number(value + delta, check.decimals);
                let err = check_question(&quiz.path, &wrong).expect_err(&format!(
                    "{} accepted {:?}",
                    q.label(),
                    wrong.answer
                ));
                assert!(
                    err.contains(&format!("question {} (", q.number))
                        && err.contains(&*quiz.path.file_name().unwrap().to_string_lossy()),
                    "the error does not name the question: {err}"
                );
            }
            // A wrong alternative spelling is caught too.
            let mut wrong = q.clone();
            wrong.alternatives = vec![format_number(value + unit, check.decimals)];
            assert!(check_question(&quiz.path, &wrong).is_err());
            mutated += 1;
        }
    }
    assert!(mutated >= 10, "only {mutated} numeric answers were mutated");
}

#[test]
fn an_unknown_check_function_is_an_error_naming_the_question() {
    let text = r#"
[[questions]]
type = "ShortAnswer"
prompt.prompt = "How many?"
answer.answer = "3"
check.fn = "no_such_function"
"#;
    let quiz = quizzes::parse_quiz(std::path::Path::new("x.toml"), text).unwrap();
    let errs = check_file(&quiz);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains("x.toml question 1") && errs[0].contains("no_such_function"));
}
