from gecko_factory.templates import Template, load_template


def test_render_fills_each_placeholder_once_and_never_inside_a_value():
    tpl = Template("t", "t@0", {"s": "P: {passage}\nQ: {query} {unknown}"})
    assert tpl.render("s", passage="a {query} b", query="c {passage}") == "P: a {query} b\nQ: c {passage} {unknown}"


def test_the_judge_prompt_renders_as_before():
    # judge_v1's text is in every cache key and shard marker: rendering must not move it
    assert load_template("judge_v1").render("relevance_user", passage="P", query="Q") == (
        "Query: Q\nPassage: P\nDoes the passage answer the query?")


def test_a_recipe_carries_the_templates_of_its_judge_form_and_no_other():
    from gecko_factory.templates import judge_prompt_version, prompt_versions

    judge_v1, shared = load_template("judge_v1").version, load_template("judge_shared_v1").version
    # the forms that read judge_v1 alone keep the recipe (and so every shard's hash) they had
    for mode in ("two_prompt", "one_pass", "rc_only"):
        versions = prompt_versions(mode)
        assert set(versions) == {"synthesize_v1", "judge_v1"}
        assert judge_prompt_version(versions, mode) == judge_v1
    versions = prompt_versions("shared_prefix")
    assert versions["judge_shared_v1"] == shared
    assert judge_prompt_version(versions, "shared_prefix") == f"{judge_v1}+{shared}"
