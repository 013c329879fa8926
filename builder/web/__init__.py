"""The web pieces: the Flask extension for sites (`driptag.web.flask`) and the QA demo site."""
