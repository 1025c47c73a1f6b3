"""An engine package whose engines fail in each way discovery must survive."""

ENGINES = {
    "needs-a-package": "needs_package:Engine",  # its module imports a package that is not installed
    "fails-to-build": "engines:FailsToBuild",  # it imports, but building the engine raises
    "misnamed": "engines:Misnamed",  # it declares another name than its package says
    "works": "engines:Works",
}
