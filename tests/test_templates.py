from gecko_factory.templates import Template, load_template


def test_render_fills_each_placeholder_once_and_never_inside_a_value():
    tpl = Template("t", "t@0", {"s": "P: {passage}\nQ: {query} {unknown}"})
    assert tpl.render("s", passage="a {query} b", query="c {passage}") == "P: a {query} b\nQ: c {passage} {unknown}"


def test_the_judge_prompt_renders_as_before():
    # judge_v1's text is in every cache key and shard marker: rendering must not move it
    assert load_template("judge_v1").render("relevance_user", passage="P", query="Q") == (
        "Query: Q\nPassage: P\nDoes the passage answer the query?")
