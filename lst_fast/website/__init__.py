"""The static site of a leaderboard or of evaluations (`lst-fast site`), one concern per module:

inputs        the runs of a leaderboard folder or of evaluation folders, and whether they are paired
walks         every walk as a row, the "most striking" order, the walks that get a page
walk_details  the model forwards of the walk pages (frames by a recorded rerun, line, width), cached
images        PNG at the data's resolution, JPEG thumbnails of large images
charts        the walk pages' charts as inline SVG
build         build_site: the pages (Jinja2 templates in templates/, the script and style in static/)
"""

from lst_fast.website.build import SiteOptions, build_site

__all__ = ["SiteOptions", "build_site"]
