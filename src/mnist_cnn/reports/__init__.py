"""Reports: what a person reads.

Owns the one report engine (:mod:`~mnist_cnn.reports.html`: self-contained HTML with a
Content-Security-Policy, and the same content as Markdown), figures (:mod:`~mnist_cnn.reports.figures`),
each run's evaluation artifacts and report.html (:mod:`~mnist_cnn.reports.run`), and the three report
commands' work: explore a data set, explain a model, compare models with statistics. Depends on
evaluation, models, data and artifacts; it never trains (training the runs a comparison needs lives
in :mod:`mnist_cnn.training.compare`).
"""
