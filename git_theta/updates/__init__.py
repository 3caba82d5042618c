"""Update records: how a parameter's value is stored and rebuilt (plugins, `git_theta.updates`)."""
