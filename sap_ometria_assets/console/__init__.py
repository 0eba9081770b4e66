"""What a person sees in the terminal when `sap-ometria demo|sync` runs: progress, summary, failure."""
