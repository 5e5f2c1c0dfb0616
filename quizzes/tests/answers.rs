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
            if q.kind == "ShortAnswer" && parse_number(&q.answer).is_some() {
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
    for name in ["stage1.toml", "stage3.toml"] {
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

/// Errata: a source claimed token 49 of a 50-token sequence with block table [5, 12, 8] (block
/// size 16) goes to slot 8·16 + 1 = 129. The engine disagrees.
#[test]
fn errata_token_49_does_not_fit_a_three_block_table() {
    use engine::core::block::{blocks_needed, slot_for_position, BlockId};
    let table = [BlockId(5), BlockId(12), BlockId(8)];
    // 50 tokens need 4 blocks; the table has 3.
    assert_eq!(blocks_needed(50, 16), 4);
    assert!(blocks_needed(50, 16) > table.len());
    // Position 49 is in logical block 3, which does not exist: the engine panics.
    let refused = std::panic::catch_unwind(|| slot_for_position(&table, 16, 49));
    assert!(
        refused.is_err(),
        "the engine mapped position 49 with 3 blocks"
    );
    // Slot 129 (block 8, offset 1) belongs to position 33.
    assert_eq!(slot_for_position(&table, 16, 33).0, 129);
    // With a fourth block, position 49 has a slot in that block.
    let four = [BlockId(5), BlockId(12), BlockId(8), BlockId(20)];
    assert_eq!(slot_for_position(&four, 16, 49).0, 20 * 16 + 1);
    // And the quiz checker reports the refusal instead of crashing.
    let args: toml::Table =
        toml::from_str("block_table = [5, 12, 8]\nblock_size = 16\nposition = 49").unwrap();
    let err = quizzes::engine_calls::call("slot_for_position", &args).unwrap_err();
    assert!(err.contains("refuses position 49"), "{err}");
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
