"""The probe's report figures."""


def test_the_context_rot_figure_never_joins_the_closed_book_point_to_the_questions_without_a_needle(monkeypatch):
    """At 0 words every question is asked; past it, invented people have no passage (depth None):
    two series, which the figure used to draw as one line."""
    from moelab.probe import report

    rot = [{"context_words": w, "depth": d, "prompt_words": w + 5, "accuracy": a, "accuracy_interval": [a - 0.05, a + 0.05]}
           for w, d, a in ((0, None, 0.8), (64, 0.5, 0.1), (64, None, 0.0), (256, 0.5, 0.1), (256, None, 0.05))]
    drawn = []
    real = report.plt.Axes.errorbar
    monkeypatch.setattr(report.plt.Axes, "errorbar",
                        lambda self, x, y, **k: drawn.append((k["label"], list(x))) or real(self, x, y, **k))
    report.context_rot_figure(rot)
    assert dict(drawn) == {"closed book (0 words, all questions)": [5],
                           "needle at depth 0.5": [69, 261],
                           "no passage to find (invented people)": [69, 261]}
