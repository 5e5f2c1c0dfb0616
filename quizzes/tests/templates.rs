//! The numeric questions' templates: the book's version is the template with the book's
//! numbers, and every draw is graded by what the engine computes.

use quizzes::engine_calls;
use quizzes::template::{all_kinds, grade, parse_templates, Rng, Template};
use quizzes::{format_number, quiz_files};

fn all_templates() -> Vec<(String, Template)> {
    let mut out = Vec::new();
    for path in quiz_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        for t in parse_templates(&path, &text).unwrap_or_else(|e| panic!("{e}")) {
            out.push((format!("{} question {}", path.display(), t.number), t));
        }
    }
    assert!(!out.is_empty(), "no templates found");
    out
}

#[test]
fn the_books_question_is_its_template_with_the_books_numbers() {
    for (label, t) in all_templates() {
        let r = t.render_book().unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(r.prompt.trim(), t.book_prompt.trim(), "{label}: prompt");
        assert!(
            t.book_context.trim().starts_with(r.context.trim()),
            "{label}: the book's context does not start with the template's:\n{}\n---\n{}",
            r.context.trim(),
            t.book_context.trim()
        );
        assert_eq!(r.answer, t.book_answer.trim(), "{label}: answer");
    }
}

/// Every numeric question of the book (one with a `check`) is a template: a learner can be
/// asked it with fresh numbers.
#[test]
fn every_numeric_question_has_a_template() {
    let mut missing = Vec::new();
    let mut numeric = 0;
    for path in quiz_files() {
        let quiz = quizzes::load_quiz(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let templated: Vec<usize> = parse_templates(&path, &text)
            .unwrap()
            .iter()
            .map(|t| t.number)
            .collect();
        for q in quiz.questions.iter().filter(|q| q.check.is_some()) {
            numeric += 1;
            if !templated.contains(&q.number) {
                missing.push(format!("{} {}", path.display(), q.label()));
            }
        }
    }
    assert!(numeric >= 80, "only {numeric} numeric questions");
    assert!(
        missing.is_empty(),
        "numeric questions without a template:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_kind_of_the_registry_has_a_book_question() {
    let used: Vec<String> = all_templates().into_iter().map(|(_, t)| t.kind).collect();
    for k in all_kinds() {
        assert!(
            used.iter().any(|u| u == k.name),
            "kind {} is unused",
            k.name
        );
    }
}

/// The answer computed here straight from the engine's functions, where one call gives it;
/// the scheduler questions go through the same `check` call the book's answers do.
fn engine_answer(t: &Template, args: &toml::Table) -> String {
    let int = |k: &str| args[k].as_integer().unwrap() as usize;
    let value = match t.check.function.as_str() {
        "slot_for_position" => {
            let table: Vec<engine::core::block::BlockId> = args["block_table"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| engine::core::block::BlockId(v.as_integer().unwrap() as u32))
                .collect();
            engine::core::block::slot_for_position(&table, int("block_size"), int("position")).0
                as f64
        }
        "blocks_needed" => {
            engine::core::block::blocks_needed(int("num_tokens"), int("block_size")) as f64
        }
        "weight_bytes" => {
            let c = engine_calls::model_config(args["model"].as_str().unwrap()).unwrap();
            engine::model_executor::weights::weight_bytes(&c, int("bits") as u64) as f64
        }
        f => {
            // Each distinct draw is computed once here, independently of the template's own
            // cache (a pipeline or TP run costs milliseconds).
            thread_local! {
                static SEEN: std::cell::RefCell<std::collections::HashMap<String, f64>> =
                    Default::default();
            }
            let key = format!("{f} {args}");
            let cached = SEEN.with(|s| s.borrow().get(&key).copied());
            cached.unwrap_or_else(|| {
                let v = engine_calls::call(f, args).unwrap();
                SEEN.with(|s| s.borrow_mut().insert(key, v));
                v
            })
        }
    };
    format_number(value / t.check.scale, t.check.decimals)
}

#[test]
fn a_thousand_draws_per_template_are_graded_by_the_engine() {
    let mut rng = Rng::new(2026);
    let templates = all_templates();
    for (i, (label, t)) in templates.iter().enumerate() {
        let mut answers = std::collections::BTreeSet::new();
        for draw in 0..1000 {
            // A "Same batch" question: every other draw follows the previous question's.
            let r = if !t.same.is_empty() && draw % 2 == 1 {
                let (_, before) = &templates[i - 1];
                let prev = before.draw(&mut rng).unwrap();
                let r = t
                    .draw_after(&mut rng, Some(&prev.args))
                    .unwrap_or_else(|e| panic!("{label}: {e}"));
                for key in &t.same {
                    assert_eq!(r.args.get(key), prev.args.get(key), "{label}: {key}");
                }
                r
            } else {
                t.draw(&mut rng).unwrap_or_else(|e| panic!("{label}: {e}"))
            };
            let expected = engine_answer(t, &r.args);
            assert_eq!(r.answer, expected, "{label} with {:?}", r.args);
            assert!(grade(&expected, &r.answer, r.decimals), "{label}");
            // One unit of the last digit off either way is wrong.
            let unit = 10f64.powi(-(r.decimals as i32));
            let v: f64 = expected.parse().unwrap();
            for wrong in [v + unit, v - unit] {
                let wrong = format_number(wrong, r.decimals);
                assert!(!grade(&wrong, &r.answer, r.decimals), "{label}: {wrong}");
            }
            for text in [&r.prompt, &r.context] {
                assert!(
                    !has_placeholder(text),
                    "{label}: unfilled placeholder in {text}"
                );
            }
            answers.insert(r.answer);
        }
        // Fresh numbers: the draws do not all have the same answer (a logits-rows question
        // has two, 0 and 1; the weight questions three, one per model the book knows).
        assert!(answers.len() >= 2, "{label}: only {answers:?}");
    }
}

fn has_placeholder(text: &str) -> bool {
    let bytes = text.as_bytes();
    (0..bytes.len()).any(|i| {
        bytes[i] == b'{'
            && text[i + 1..].find('}').is_some_and(|j| {
                text[i + 1..i + 1 + j]
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
                    && j > 0
            })
    })
}

#[test]
fn drawn_numbers_get_the_article_they_are_spoken_with() {
    use quizzes::template::articles;
    assert_eq!(
        articles("each with an\n24-token prompt"),
        "each with a\n24-token prompt"
    );
    assert_eq!(
        articles("each with a\n8-token prompt"),
        "each with an\n8-token prompt"
    );
    assert_eq!(
        articles("A **800-token** prompt, a 11th step"),
        "An **800-token** prompt, an 11th step"
    );
    assert_eq!(
        articles("a eighth, a 18, a 118, a third block"),
        "an eighth, an 18, a 118, a third block"
    );
}

#[test]
fn grading_reads_the_answer_as_a_number_within_half_a_unit() {
    assert!(grade("13.48 GB", "13.48", 2));
    assert!(grade("13.477", "13.48", 2));
    assert!(!grade("13.49", "13.48", 2));
    assert!(grade("1,600", "1600", 0));
    assert!(!grade("1601", "1600", 0));
    assert!(!grade("many", "1600", 0));
}

#[test]
fn the_same_seed_draws_the_same_questions() {
    let (_, t) = all_templates().into_iter().next().unwrap();
    let a: Vec<_> = (0..5)
        .map(|_| ())
        .scan(Rng::new(9), |r, _| Some(t.draw(r).unwrap()))
        .collect();
    let b: Vec<_> = (0..5)
        .map(|_| ())
        .scan(Rng::new(9), |r, _| Some(t.draw(r).unwrap()))
        .collect();
    assert_eq!(a, b);
}
