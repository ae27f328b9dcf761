"""Maps the code folders onto one import name (``shardnet.common`` is
``common/`` and so on); ``package/`` is ``shardnet`` itself, which holds
only the top-level API names (``shardnet.Client``, ``shardnet.Stack``)."""

from setuptools import find_packages, setup

FOLDERS = ("common", "dispatcher", "shards", "scripts", "embedded")

package_dir = {"shardnet": "package"}
package_dir.update({f"shardnet.{folder}": folder for folder in FOLDERS})
packages = ["shardnet"]
for folder in FOLDERS:
    packages.append(f"shardnet.{folder}")
    packages += [f"shardnet.{folder}.{sub}" for sub in find_packages(folder)]
    for sub in find_packages(folder):
        package_dir[f"shardnet.{folder}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(package_dir=package_dir, packages=packages)
