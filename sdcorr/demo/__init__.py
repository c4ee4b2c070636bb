"""``sdcorr demo``: an interactive correspondence page (Gradio) and its model-side session.

:mod:`sdcorr.demo.render` and :mod:`sdcorr.demo.session` need no Gradio;
:mod:`sdcorr.demo.app` builds the page and needs the ``sdcorr[demo]`` extra.
"""
