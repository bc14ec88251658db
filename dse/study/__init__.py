"""A study: where it lives, how it proposes, how its trials are run and its front is published.

- :mod:`.storage`: SQLite, PostgreSQL or a journal file, with heartbeats (:mod:`.journal_lock`);
- :mod:`.sampler`: the configured Optuna sampler (the grid gets the bound space);
- :mod:`.create`: create or re-open a study with the config it was created with;
- :mod:`.settings`: the loop's settings (its objectives: :mod:`dse.objectives`);
- :mod:`.trial_policy`: which proposals are evaluated (duplicates, the exact budget with many workers);
- :mod:`.trial_evaluation`: one trial evaluated, constrained and recorded;
- :mod:`.front_publication`: the front, its hypervolume and its tracked views, refreshed as trials end;
- :mod:`.runner`: the loop that ties them together (baseline, streaks, signals);
- :mod:`.screening`, :mod:`.search_retraining`, :mod:`.final_evaluation`, :mod:`.replay`: what the loop can add.

Import the modules themselves: this package re-exports nothing, so importing one leaf (the
objectives, the Optuna adapter) never pulls in the loop.
"""
