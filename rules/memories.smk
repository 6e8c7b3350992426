# Placeholder: rules are added by the analysis work on issue 5.
