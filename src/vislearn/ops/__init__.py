"""Operations shared by training and evaluation: kNN, k-means and neighbour bags, feature
extraction, optimisers and learning-rate schedules."""
