"""Small values users wrap their arguments in (``headwater.utilities.annotations``),
at the path Prefect code imports them from."""
