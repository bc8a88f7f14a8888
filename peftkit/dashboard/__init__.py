"""`peftkit ui`: a local web dashboard over a folder of run directories: the runs, their curves refreshing while
they train, eval / health / choices / data / samples, and runs compared side by side. FastAPI (the `ui` extra)
serving one static page; the plots and tables are peftkit.reporting's."""
